//! The kernel's socket tables, read once at start-up so that connections
//! older than the agent are reported too.

pub mod diag;
pub mod netns;
pub mod owners;
pub mod startup;
