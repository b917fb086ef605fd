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
}
