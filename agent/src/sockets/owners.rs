//! Which process holds a socket, from /proc/PID/fd (sockets are files whose
//! link reads `socket:[INODE]`). Needs CAP_SYS_PTRACE for other users'
//! processes; what it cannot read stays unknown.

use std::collections::HashMap;

use procfs::process::FDTarget;

/// A process holding a socket, with its cgroup v2 path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketHolder {
    pub pid: u32,
    pub comm: String,
    /// From the `0::PATH` line of /proc/PID/cgroup.
    pub cgroup_path: Option<String>,
}

/// Socket inode → the lowest-numbered process holding it.
pub fn socket_holders() -> HashMap<u64, SocketHolder> {
    let mut holders = HashMap::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return holders;
    };
    let mut processes: Vec<_> = processes.flatten().collect();
    processes.sort_by_key(procfs::process::Process::pid);
    for process in processes {
        let Ok(fds) = process.fd() else { continue };
        let inodes: Vec<u64> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect();
        if inodes.is_empty() {
            continue;
        }
        let holder = SocketHolder {
            pid: process.pid().unsigned_abs(),
            comm: process.stat().map(|s| s.comm).unwrap_or_default(),
            cgroup_path: cgroup_v2_path(&process),
        };
        for inode in inodes {
            holders.entry(inode).or_insert_with(|| holder.clone());
        }
    }
    holders
}

fn cgroup_v2_path(process: &procfs::process::Process) -> Option<String> {
    process
        .cgroups()
        .ok()?
        .0
        .into_iter()
        .find(|group| group.hierarchy == 0)
        .map(|group| group.pathname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_our_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("fd")
            .ino();
        let holders = socket_holders();
        let me = holders.get(&inode).expect("our socket is listed");
        assert_eq!(me.pid, std::process::id());
        assert!(
            me.cgroup_path
                .as_deref()
                .is_some_and(|p| p.starts_with('/'))
        );
    }
}
