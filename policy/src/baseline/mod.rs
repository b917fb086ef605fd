//! Baselines: the reviewed list of allowed lateral paths.
//!
//! file ─ [`parse`] (positions) ─ [`validate`] (rules, lint) ─ [`matcher`]
//! (indexes); [`selector`] is what an edge's `from` and `to` match.

pub mod diag;
pub mod format;
pub mod matcher;
pub mod parse;
pub mod selector;
pub mod validate;
