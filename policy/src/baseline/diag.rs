//! Findings about a file: errors (the file is rejected) and warnings
//! (it loads, but a reviewer should look), each with `file:line:col`.

use std::fmt;

use super::format::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub level: Level,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: &str, at: Option<Pos>, message: impl Into<String>) -> Self {
        Self::new(Level::Error, file, at, message)
    }

    pub fn warning(file: &str, at: Option<Pos>, message: impl Into<String>) -> Self {
        Self::new(Level::Warning, file, at, message)
    }

    fn new(level: Level, file: &str, at: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            level,
            file: file.to_owned(),
            line: at.map(|p| p.line),
            column: at.map(|p| p.column),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(
                f,
                "{}:{line}:{column}: {level}: {}",
                self.file, self.message
            ),
            _ => write!(f, "{}: {level}: {}", self.file, self.message),
        }
    }
}

/// Errors that reject a file, all of them.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Rejected(pub Vec<Diagnostic>);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Diagnostic::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}
