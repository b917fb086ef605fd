//! Every error and warning of a set of baseline files.

use std::{path::PathBuf, time::SystemTime};

use crate::baseline::{diag::Diagnostic, validate};

/// What `lint` found, in file order.
#[derive(Debug, Clone, Default)]
pub struct Lint {
    pub diagnostics: Vec<Diagnostic>,
    pub errors: usize,
    pub warnings: usize,
}

impl Lint {
    /// No errors, and no warnings either when they are denied.
    pub fn passes(&self, deny_warnings: bool) -> bool {
        self.errors == 0 && !(deny_warnings && self.warnings > 0)
    }
}

/// Checks each file: its errors (the file is rejected) and its warnings
/// (it loads, but a reviewer should look).
pub fn lint(files: &[PathBuf], now: SystemTime) -> Lint {
    let mut lint = Lint::default();
    for file in files {
        let diagnostics = match validate::load(file, now) {
            Ok((_, warnings)) => warnings,
            Err(rejected) => rejected.0,
        };
        for diagnostic in diagnostics {
            if diagnostic.is_error() {
                lint.errors += 1;
            } else {
                lint.warnings += 1;
            }
            lint.diagnostics.push(diagnostic);
        }
    }
    lint
}
