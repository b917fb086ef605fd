//! In a pod with `hostPID`, the agent still starts in the container's own
//! cgroup namespace, where cgroup paths (and mountinfo's cgroup2 roots) are
//! relative to the container. Kernel events name cgroups by their host
//! paths, so the agent joins the host's cgroup namespace (PID 1's) before
//! anything else runs; on a plain host the two are the same and nothing
//! happens.

use std::{fs::File, os::unix::fs::MetadataExt as _};

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
    let inode = |path: &str| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let (Some(ours), Some(host)) = (inode("/proc/self/ns/cgroup"), inode("/proc/1/ns/cgroup"))
    else {
        return CgroupNamespace::Host;
    };
    if ours == host {
        return CgroupNamespace::Host;
    }
    let joined = File::open("/proc/1/ns/cgroup")
        .map_err(|e| e.to_string())
        .and_then(|ns| setns(ns, CloneFlags::CLONE_NEWCGROUP).map_err(|e| e.to_string()));
    match joined {
        Ok(()) => CgroupNamespace::Joined,
        Err(err) => CgroupNamespace::Stayed(err),
    }
}
