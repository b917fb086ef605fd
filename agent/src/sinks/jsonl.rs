//! The JSON-lines alert sink: one alert per line, on stdout or appended to
//! a file. Times are RFC 3339; `event` is the alert kind's event name.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use eastwatch_policy::{alert::Alert, timestamp::rfc3339};
use serde_json::{Value, json};

use super::{AlertSink, SinkError};

/// An alert as a JSON object.
pub fn alert_json(alert: &Alert) -> Value {
    let mut value = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("event".into(), json!(alert.kind.event_name()));
        map.insert("time".into(), json!(rfc3339(alert.time)));
        if let (Some(flow), Some(Value::Object(facts))) = (&alert.flow, map.get_mut("flow")) {
            facts.insert("first_seen".into(), json!(rfc3339(flow.first_seen)));
            facts.insert("last_seen".into(), json!(rfc3339(flow.last_seen)));
        }
    }
    value
}

pub struct JsonLinesSink {
    out: Out,
}

enum Out {
    Stdout(std::io::Stdout),
    /// Appended to; a line that cannot be written whole is cut back off.
    File(File),
}

/// Why the alerts file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: is a symlink; eastwatch does not write alerts through one", .0.display())]
    Symlink(PathBuf),
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl JsonLinesSink {
    pub fn stdout() -> Self {
        Self {
            out: Out::Stdout(std::io::stdout()),
        }
    }

    /// Appends to `path`, creating it. A symlink at `path` is refused (a
    /// root agent must not append to whatever file it points at), and so
    /// is anything but a regular file (a FIFO would block the loop).
    pub fn file(path: &Path) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => OpenError::Symlink(path.to_owned()),
                Some(libc::ENXIO) => OpenError::NotAFile(path.to_owned()),
                _ => OpenError::Io {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let metadata = file.metadata().map_err(|source| OpenError::Io {
            path: path.to_owned(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(OpenError::NotAFile(path.to_owned()));
        }
        Ok(Self {
            out: Out::File(file),
        })
    }
}

/// Appends `line` whole or not at all: on a failed write (a full disk)
/// the part that made it is truncated away, so a reader never sees a torn
/// line.
fn append_whole(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    if let Err(err) = file.write_all(line) {
        let _ = file.set_len(before);
        return Err(err);
    }
    Ok(())
}

impl AlertSink for JsonLinesSink {
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let mut line = alert_json(alert).to_string();
        line.push('\n');
        // One write per line: lines from several writers never interleave.
        match &mut self.out {
            Out::Stdout(out) => {
                out.write_all(line.as_bytes())?;
                out.flush()?;
            }
            Out::File(file) => append_whole(file, line.as_bytes())?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{process::Command, time::SystemTime};

    use eastwatch_policy::alert::{AlertContext, KernelLoss, Mode};

    use super::*;

    fn alert() -> Alert {
        let context = AlertContext {
            time: SystemTime::now(),
            node: Some("node-a".into()),
            mode: Mode::Monitor,
            baseline_digest: None,
        };
        let loss = KernelLoss {
            lost: [("ring_full".to_owned(), 1)].into(),
            totals: [("ring_full".to_owned(), 1)].into(),
        };
        Alert::kernel_loss(&context, &loss)
    }

    #[test]
    fn a_symlinked_alerts_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = dir.path().join("alerts.jsonl");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = JsonLinesSink::file(&link).err().expect("refused");
        assert!(matches!(err, OpenError::Symlink(_)), "{err}");
        assert!(err.to_string().contains("alerts.jsonl"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    /// A full disk (a one-page tmpfs, mounted here: needs root) never
    /// leaves a torn line behind.
    #[test]
    fn a_full_disk_never_tears_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4k", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        let path = dir.path().join("alerts.jsonl");
        let result = std::panic::catch_unwind(|| {
            let mut sink = JsonLinesSink::file(&path).unwrap();
            let mut failed = 0;
            for _ in 0..100 {
                if sink.deliver(&alert()).is_err() {
                    failed += 1;
                }
            }
            assert!(failed > 0, "the disk filled up");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.ends_with('\n'), "no torn tail: {text:?}");
            for line in text.lines() {
                serde_json::from_str::<Value>(line).expect("every line whole");
            }
        });
        let _ = Command::new("umount").arg(dir.path()).status();
        result.unwrap();
    }
}
