//! The long-running side of baselines: `eastwatch learn`, `monitor` and
//! `run`, hot reload, and the `baseline` tool commands.

pub mod commands;
pub mod reload;
pub mod runtime;
