//! Baselines: the reviewed list of allowed lateral paths, learn mode that
//! writes one, monitor mode that judges every flow against one, and the
//! tool chain (lint, diff, merge, explain, report, schema), and what a
//! baseline becomes: network policies (export) and a service map (graph).
//!
//! file ─ parse (positions) ─ validate (rules, lint) ─ matcher (indexes)
//! flows ─ resolve ─ learn (aggregate, write) | judge (verdicts, alerts)

pub mod commands;
pub mod config;
pub mod diag;
pub mod exclude;
pub mod format;
pub mod graph;
pub mod judge;
pub mod learn;
pub mod matcher;
pub mod netpol;
pub mod observed;
pub mod parse;
pub mod policy_commands;
pub mod reload;
pub mod runtime;
pub mod selector;
pub mod tools;
pub mod validate;

#[cfg(test)]
mod tests;
