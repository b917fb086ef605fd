//! Status lines: JSON objects on stdout, one per line, next to the alerts
//! (`identity`, `ready`, `learned`, `learn_progress`, `summary`).

use std::io::Write as _;

use serde_json::Value;

/// Prints one status line on stdout.
pub fn print(value: Value) {
    let mut line = value.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
