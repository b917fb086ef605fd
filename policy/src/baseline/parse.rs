//! Reading YAML with serde-saphyr: structural errors come with the line
//! and column the parser stopped at; values keep their positions
//! ([`super::format::Located`]) for the semantic checks that follow.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::{diag::Diagnostic, format::Pos};
use crate::file::{MAX_INPUT_BYTES, ReadError, read_text_bounded};

/// The parser's limits for `text`. Its defaults (250,000 nodes, 1,000,000
/// events, 64 MiB of scalars) stop a baseline at about 20,000 edges; here
/// they grow with the input instead, which is itself bounded
/// ([`crate::file::MAX_INPUT_BYTES`]): a YAML node or event takes at least
/// a byte or two of input, so only aliases (whose own limits stay at the
/// defaults, against "billion laughs") could make more of them.
pub fn options_for(text: &str) -> serde_saphyr::Options {
    let len = text.len();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(len.saturating_mul(2));
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    serde_saphyr::options! { with_snippet: false, budget: Some(budget) }
}

/// Deserializes `text` (named `file` in messages).
pub fn from_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Vec<Diagnostic>> {
    let options = options_for(text);
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|err| {
        let at = err.location().filter(|l| l.line() > 0).map(|l| Pos {
            line: l.line(),
            column: l.column(),
        });
        vec![Diagnostic::error(file, at, message_of(&err))]
    })
}

/// Reads and deserializes a file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<(T, String), Vec<Diagnostic>> {
    let (text, file) = read_text(path)?;
    let value = from_str(&text, &file)?;
    Ok((value, text))
}

/// A file's text and its name for messages.
pub fn read_text(path: &Path) -> Result<(String, String), Vec<Diagnostic>> {
    let file = path.display().to_string();
    match read_text_bounded(path, MAX_INPUT_BYTES) {
        Ok(text) => Ok((text, file)),
        Err(err) => {
            let at = match err {
                ReadError::NotUtf8 { line, column, .. } => Some(Pos { line, column }),
                _ => None,
            };
            Err(vec![Diagnostic::error(
                &file,
                at,
                format!("cannot read: {err}"),
            )])
        }
    }
}

/// The parser's message without the location it appends (we print
/// `file:line:col` ourselves).
fn message_of(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let text = match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    };
    text.trim().to_owned()
}
