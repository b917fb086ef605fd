//! Writing files so that a crash never leaves half of one behind, and a
//! symlink someone planted in the directory is never followed.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The directory `path` lives in.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates a temporary file beside `path` that did not exist before
/// (`O_CREAT|O_EXCL`: a planted file or symlink of the same name makes it
/// pick another name instead of writing through it).
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent(path);
    let mut tries = 0;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => {
                tries += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file created
/// exclusively in the same directory, synced, renamed over the old one
/// (the rename replaces a symlink at `path` rather than following it), and
/// the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let error = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let (tmp, mut file) = create_temp(path).map_err(error)?;
    let result = (|| -> std::io::Result<()> {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is.
        File::open(parent(path))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(error)
}

/// Whether [`write_atomic`] can write `path`: its directory exists and
/// takes a new file. For checking outputs at start-up, before hours of
/// work that could not be saved.
pub fn check_writable(path: &Path) -> Result<(), WriteError> {
    let (tmp, file) = create_temp(path).map_err(|source| WriteError {
        path: path.to_owned(),
        source,
    })?;
    drop(file);
    let _ = std::fs::remove_file(tmp);
    Ok(())
}

/// The largest input file read (a baseline, a config, an inventory, a
/// checkpoint, evidence): 256 MiB. A baseline of 200,000 edges is about
/// 40 MB of YAML; anything near the limit is a mistake (`/dev/zero`, the
/// wrong file) and is refused before it is held in memory.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A FIFO, a device, a socket, a directory: refused rather than read
    /// (a FIFO without a writer would block for ever, a device may never
    /// end).
    #[error("not a regular file: refused")]
    NotAFile,
    #[error("larger than the limit of {limit} bytes: refused")]
    TooLarge { limit: u64 },
    #[error("not UTF-8: invalid byte at offset {offset} (line {line}, column {column})")]
    NotUtf8 { offset: u64, line: u64, column: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io(err) if err.kind() == std::io::ErrorKind::NotFound)
    }
}

impl From<ReadError> for std::io::Error {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Io(err) => err,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads a regular file of at most `limit` bytes. Opened non-blocking, so
/// a FIFO without a writer is refused at once instead of hanging.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read as _;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(ReadError::NotAFile);
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::new();
    // The file may grow while it is read: the limit holds regardless.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_bounded`], as UTF-8 text; an invalid byte is named with its
/// offset, line and column.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let before = &err.as_bytes()[..offset];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        // Columns count characters, as the parser's do.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        ReadError::NotUtf8 {
            offset: wide(offset),
            line: wide(line),
            column: wide(column),
        }
    })
}

/// `O_NONBLOCK` (Linux, every architecture eastwatch runs on).
const O_NONBLOCK: i32 = 0o4000;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A symlink planted under any name the writer might use for its
    /// temporary file never gets written through.
    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.path().join("out.yaml");
        // The names today's and earlier writers used.
        for name in [
            format!(".out.yaml.tmp.{}", std::process::id()),
            format!(".out.yaml.tmp.{}.0", std::process::id()),
            format!(".out.yaml.tmp.{}.1", std::process::id()),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_atomic(&out, b"edges: []\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "edges: []\n");
        // A symlink at the path itself is replaced, not followed.
        std::fs::remove_file(&out).unwrap();
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_atomic(&out, b"again\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&out).unwrap().is_symlink());
    }

    #[test]
    fn an_unwritable_place_is_named_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing").join("out.yaml");
        let err = check_writable(&out).unwrap_err();
        assert!(err.path.ends_with("missing/out.yaml"), "{err}");
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        check_writable(&dir.path().join("out.yaml")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn endless_and_blocking_inputs_are_refused_at_once() {
        let err = read_bounded(Path::new("/dev/zero"), MAX_INPUT_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::NotAFile), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // No writer: a blocking open would hang here.
        let err = read_bounded(&fifo, MAX_INPUT_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::NotAFile), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 1001]).unwrap();
        let err = read_bounded(&big, 1000).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { limit: 1000 }), "{err}");
        assert_eq!(read_bounded(&big, 1001).unwrap().len(), 1001);
    }

    #[test]
    fn invalid_utf8_is_named_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, b"a: 1\nbb: \xc3\xa9\xff\n").unwrap();
        let err = read_text_bounded(&path, MAX_INPUT_BYTES).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not UTF-8: invalid byte at offset 11 (line 2, column 6)"
        );
    }
}
