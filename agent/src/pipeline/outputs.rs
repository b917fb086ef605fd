//! Learn's output files, checked before the programs attach: a path that
//! cannot be written is a start-up error, not hours of learning lost at the
//! first checkpoint. The checkpoint is locked so that two learns never
//! write the same one.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use eastwatch_policy::file::check_writable;
use nix::fcntl::{Flock, FlockArg};

use super::policy::LearnFiles;

/// Held while learning: another learn with the same checkpoint fails to
/// start.
pub struct CheckpointLock {
    _lock: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{what} {}: cannot be written: {source}", path.display())]
    Unwritable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {}: lock {}: {source}", checkpoint.display(), lock.display())]
    Lock {
        checkpoint: PathBuf,
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {} is in use by another eastwatch learn (lock {})",
        checkpoint.display(),
        lock.display()
    )]
    InUse { checkpoint: PathBuf, lock: PathBuf },
}

impl LearnFiles {
    /// Checks that every output can be written and locks the checkpoint.
    pub fn prepare(&self) -> Result<Option<CheckpointLock>, OutputError> {
        let outputs = [
            ("--out", Some(&self.out)),
            ("--evidence", self.evidence.as_ref()),
            ("--checkpoint", self.checkpoint.as_ref()),
        ];
        for (what, path) in outputs {
            if let Some(path) = path {
                check_writable(path).map_err(|e| OutputError::Unwritable {
                    what,
                    path: e.path,
                    source: e.source,
                })?;
            }
        }
        self.checkpoint.as_deref().map(lock).transpose()
    }
}

/// Locks `<checkpoint>.lock` (the checkpoint itself is replaced by renames,
/// so its lock lives beside it).
fn lock(checkpoint: &Path) -> Result<CheckpointLock, OutputError> {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock)
        .map_err(|source| OutputError::Lock {
            checkpoint: checkpoint.to_owned(),
            lock: lock.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(CheckpointLock { _lock: held }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(OutputError::InUse {
            checkpoint: checkpoint.to_owned(),
            lock,
        }),
        Err((_, errno)) => Err(OutputError::Lock {
            checkpoint: checkpoint.to_owned(),
            lock,
            source: errno.into(),
        }),
    }
}
