//! Baselines: the reviewed list of allowed lateral paths, learn mode that
//! writes one, monitor mode that judges every flow against one, and the
//! tool chain (lint, diff, merge, explain, report, schema).
//!
//! file ─ parse (positions) ─ validate (rules, lint) ─ matcher (indexes)
//! flows ─ resolve ─ learn (aggregate, write) | judge (verdicts, alerts)

pub mod diag;
pub mod format;
pub mod matcher;
pub mod parse;
pub mod selector;
pub mod validate;

#[cfg(test)]
mod tests;
