//! eastwatch's policy logic, free of the kernel and of I/O beyond files:
//! the flow and identity model, the alert model, baselines (format, parse,
//! validate, selectors, the compiled matcher), learn mode, the judge, the
//! agent config file and the baseline tools.
//!
//! ```text
//! Flow ─(agent: identity)─ ResolvedFlow ─┬─ learn::Learner ─ BaselineDoc
//!                                        └─ judge::Judge ── Judgement (verdict + alerts)
//! baseline file ─ parse ─ validate ─ matcher::Matcher ─┘
//! ```
//!
//! The agent crate wires the kernel, the identity sources, this logic and
//! the sinks; this crate builds and tests with the stock stable toolchain.

#![forbid(unsafe_code)]

pub mod alert;
pub mod baseline;
pub mod config;
pub mod exclude;
pub mod file;
pub mod flow;
pub mod identity;
pub mod judge;
pub mod learn;
pub mod timestamp;
pub mod tools;

#[cfg(test)]
mod tests;
