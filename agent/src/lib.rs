//! eastwatch: an eBPF runtime monitor for east-west traffic.
//!
//! Data flows one way: [`kernel`] events are decoded, enriched by the
//! [`sensor`] (cgroup paths from [`cgroup`], older sockets from [`sockets`])
//! and folded by the [`tracker`] into [`flow::Flow`]s that commands consume.

pub mod baseline;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod export;
pub mod hostns;
pub mod identity;
pub mod kernel;
pub mod observe;
pub mod privileges;
pub mod sensor;
pub mod sinks;
pub mod sockets;
pub mod tracker;

/// The flow model the sensing half produces, from the policy crate.
pub use eastwatch_policy::flow;
