//! The long-running side of baselines: `eastwatch learn`, `monitor` and
//! `run`, and hot reload.

pub mod reload;
pub mod runtime;
