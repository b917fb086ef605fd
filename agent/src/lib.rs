//! eastwatch: an eBPF runtime monitor for east-west traffic.
//!
//! Data flows one way: [`kernel`] events are decoded, enriched by the
//! [`sensor`] (cgroup paths from [`cgroup`], older sockets from [`sockets`])
//! and folded by the [`tracker`] into [`flow::Flow`]s; the [`pipeline`]
//! resolves both ends ([`identity`]), hands each flow to its stage (a
//! printer, or the learner and the judge of the policy crate) and every
//! alert to the [`sinks`] and [`export`]. [`commands`] sets it up from the
//! [`cli`].

pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod export;
pub mod hostns;
pub mod identity;
pub mod kernel;
pub mod pipeline;
pub mod privileges;
pub mod sensor;
pub mod signal;
pub mod sinks;
pub mod sockets;
pub mod tracker;

/// The flow model the sensing half produces, from the policy crate.
pub use eastwatch_policy::flow;
