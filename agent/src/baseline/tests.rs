//! Parser and lint tests with golden output (`agent/testdata/baseline`).
//! `EASTWATCH_BLESS=1` rewrites the expected files.

use std::{path::PathBuf, time::SystemTime};

use super::{diag::Diagnostic, validate};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/baseline").join(name)
}

/// Lint output as `eastwatch baseline lint` prints it, with the file named
/// relative to the test data.
fn lint_output(name: &str) -> String {
    let text = std::fs::read_to_string(testdata(name)).expect("test file");
    let diagnostics = match validate::from_str(&text, name, SystemTime::now()) {
        Ok((_, warnings)) => warnings,
        Err(rejected) => rejected.0,
    };
    let lines: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
    lines.join("\n") + "\n"
}

fn golden(name: &str) {
    let actual = lint_output(name);
    let expected_path = testdata(&format!("{name}.expected"));
    if std::env::var_os("EASTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("bless");
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(actual, expected, "lint output of {name} changed");
}

#[test]
fn valid_baseline_loads_and_dns_from_everywhere_warns() {
    golden("valid.yaml");
}

#[test]
fn every_semantic_error_has_its_position() {
    golden("errors.yaml");
}

#[test]
fn structural_errors_have_their_position() {
    golden("structural.yaml");
}

#[test]
fn over_broad_expired_and_duplicate_edges_warn() {
    golden("warnings.yaml");
}
