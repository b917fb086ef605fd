//! Harness for eastwatch's end-to-end tests: real cgroups, real network
//! namespaces, real processes and the real agent binary.
//!
//! Every test needs root (it loads eBPF programs and makes cgroups); the
//! harness fails loudly without it rather than skipping.

// A harness fails a test by panicking, with the reason in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod cgroup;
pub mod events;
pub mod interrupt;
pub mod kube_api;
pub mod netns;
pub mod noise;
pub mod otlp;
pub mod pods;
pub mod shop;
pub mod spawn;

pub use agent::Agent;
pub use cgroup::TestCgroup;
pub use events::Events;
pub use netns::{Lan, TestNetns, VethPair};
pub use noise::Noise;
pub use spawn::{Peer, peer_binary};

/// Panics unless the tests run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "eastwatch's end-to-end tests load eBPF programs and create cgroups and \
         network namespaces: run them as root (cargo xtask test)"
    );
}

/// A name no other test run on this machine uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
