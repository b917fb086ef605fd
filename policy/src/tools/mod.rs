//! The tool chain on baseline files: lint, diff, merge, explain, the
//! least-privilege report, and what a baseline becomes: network policies
//! (`netpol`, with a check of observed flows) and a service map (`graph`). Each takes files or parsed baselines and
//! returns a result the command line prints (as text with the `*_text`
//! functions, or as JSON).

mod diff;
mod explain;
pub mod graph;
mod lint;
mod merge;
pub mod netpol;
pub mod observed;
mod report;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use self::report::named_identity;
pub use self::{
    diff::{Diff, EdgeChange, EdgeSummary, diff, diff_text},
    explain::{Explanation, NearRule, explain, explain_path, explanation_text, parse_identity},
    lint::{Lint, lint},
    merge::{merge, merge_files},
    report::{
        BlastRadius, PrivilegeReport, UnusedEdge, privilege_report, privilege_text, report_files,
    },
};
use crate::baseline::{
    diag::Rejected,
    format::BaselineDoc,
    parse,
    validate::{self, Baseline, PortRange},
};

/// Why a tool could not use its input.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A file with errors: every one of them, with its position.
    #[error("{0}")]
    Rejected(#[from] Rejected),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}", path.display())]
    Evidence {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An argument that does not say what the tool needs.
    #[error("{0}")]
    Argument(String),
}

/// A baseline file as written (structure checked, rules not).
pub fn load_doc(path: &Path) -> Result<BaselineDoc, ToolError> {
    let (doc, _) = parse::read::<BaselineDoc>(path).map_err(Rejected)?;
    Ok(doc)
}

/// A baseline file that passes every check.
pub fn load_valid(path: &Path, now: SystemTime) -> Result<Baseline, ToolError> {
    let (baseline, _) = validate::load(path, now)?;
    Ok(baseline)
}

/// Ports in their natural order (transport, then number).
fn sorted_ports(ports: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ports: Vec<String> = ports
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    ports.sort_by_key(|p| PortRange::parse(p).ok());
    ports
}
