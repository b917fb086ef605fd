//! Hot reload: files are watched through their directories, so editors'
//! rename-over saves and Kubernetes ConfigMap updates (an atomic swap of
//! the `..data` symlink) are both seen. A change is applied only when its
//! contents changed and it passes every check.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Wakes whenever something changes in a watched file's directory.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    pub events: mpsc::UnboundedReceiver<()>,
}

impl FileWatch {
    /// Forgets the events so far (one reload answers them all).
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}

pub fn watch(files: &[PathBuf]) -> anyhow::Result<FileWatch> {
    let (tx, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .context("starting the file watcher")?;
    let mut dirs = BTreeSet::new();
    for file in files {
        // The link's directory (ConfigMap swaps happen there) and the
        // target's (a link to a file elsewhere).
        for path in [
            file.to_path_buf(),
            std::fs::canonicalize(file).unwrap_or_default(),
        ] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
            } else if !path.as_os_str().is_empty() {
                dirs.insert(PathBuf::from("."));
            }
        }
    }
    for dir in dirs {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    Ok(FileWatch {
        _watcher: watcher,
        events,
    })
}

/// Remembers what a file held when last looked at.
#[derive(Debug, Clone)]
pub struct Contents {
    pub path: PathBuf,
    last: Option<[u8; 32]>,
}

impl Contents {
    pub fn new(path: PathBuf) -> Self {
        Self { path, last: None }
    }

    /// True when the file now holds something else than last time (a file
    /// that cannot be read counts as changed once).
    pub fn changed(&mut self) -> bool {
        // Bounded and non-blocking: a FIFO or a huge file swapped in
        // never stalls the loop (it is rejected on reload).
        let now: [u8; 32] = match eastwatch_policy::file::read_bounded(
            &self.path,
            eastwatch_policy::file::MAX_INPUT_BYTES,
        ) {
            Ok(bytes) => Sha256::digest(&bytes).into(),
            Err(_) => [0; 32],
        };
        let changed = self.last != Some(now);
        self.last = Some(now);
        changed
    }
}
