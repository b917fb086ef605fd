//! In a pod with `hostPID`, the agent still starts in the container's own
//! cgroup namespace, where cgroup paths (and mountinfo's cgroup2 roots) are
//! relative to the container. Kernel events name cgroups by their host
//! paths, so the agent joins the host's cgroup namespace (PID 1's) before
//! anything else runs; on a plain host the two are the same and nothing
//! happens.

use std::{fs::File, os::unix::fs::MetadataExt as _, path::Path};

use nix::sched::{CloneFlags, setns};

/// What happened, for the log once logging is up.
#[derive(Debug, PartialEq, Eq)]
pub enum CgroupNamespace {
    /// Already the host's (or PID 1 is not visible: no hostPID).
    Host,
    /// Joined the host's.
    Joined,
    /// Another namespace, and joining failed (no CAP_SYS_ADMIN).
    Stayed(String),
}

/// Joins PID 1's cgroup namespace when it differs from ours. Call it while
/// the process has one thread: namespaces are per thread.
pub fn join_host_cgroup_namespace() -> CgroupNamespace {
    join_cgroup_namespace(Path::new("/proc/1/ns/cgroup"))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok()
}

/// Joins the cgroup namespace at `target` (a `/proc/PID/ns/cgroup`) unless
/// the calling thread is in it already or it cannot be seen.
pub fn join_cgroup_namespace(target: &Path) -> CgroupNamespace {
    let (Some(ours), Some(theirs)) = (
        identity(Path::new("/proc/thread-self/ns/cgroup")),
        identity(target),
    ) else {
        return CgroupNamespace::Host;
    };
    if ours == theirs {
        return CgroupNamespace::Host;
    }
    let joined = File::open(target)
        .map_err(|e| e.to_string())
        .and_then(|ns| setns(ns, CloneFlags::CLONE_NEWCGROUP).map_err(|e| e.to_string()));
    match joined {
        Ok(()) => CgroupNamespace::Joined,
        Err(err) => CgroupNamespace::Stayed(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (CAP_SYS_ADMIN), as `cargo xtask test` runs it.
    #[test]
    fn a_thread_in_its_own_cgroup_namespace_joins_the_process_one() {
        let host = Path::new("/proc/self/ns/cgroup");
        let original = identity(host).expect("our cgroup namespace");
        std::thread::spawn(move || {
            assert_eq!(join_cgroup_namespace(host), CgroupNamespace::Host);
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
                .expect("unshare the cgroup namespace (run as root)");
            let own = identity(Path::new("/proc/thread-self/ns/cgroup")).expect("ns");
            assert_ne!(own, original, "a namespace of its own");
            assert_eq!(join_cgroup_namespace(host), CgroupNamespace::Joined);
            assert_eq!(
                identity(Path::new("/proc/thread-self/ns/cgroup")),
                Some(original)
            );
        })
        .join()
        .expect("thread");
    }
}
