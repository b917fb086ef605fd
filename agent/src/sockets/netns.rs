//! Network namespaces: finding them, entering them, and the cookie the
//! kernel programs report them by.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

/// A network namespace and a path that enters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// The inode `ls -l /proc/PID/ns/net` shows.
    pub inode: u64,
    /// `/proc/PID/ns/net` of a member, or an `ip netns` bind mount.
    pub handle: PathBuf,
}

/// Every network namespace a process lives in or `ip netns` pinned. A
/// pinned namespace is entered through its bind mount, which outlives any
/// one process.
pub fn enumerate() -> Vec<Netns> {
    let mut found: BTreeMap<u64, PathBuf> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                found.entry(meta.ino()).or_insert(entry.path());
            }
        }
    }
    if let Ok(processes) = procfs::process::all_processes() {
        for process in processes.flatten() {
            let handle = PathBuf::from(format!("/proc/{}/ns/net", process.pid()));
            if let Ok(meta) = std::fs::metadata(&handle) {
                found.entry(meta.ino()).or_insert(handle);
            }
        }
    }
    found
        .into_iter()
        .map(|(inode, handle)| Netns { inode, handle })
        .collect()
}

/// Runs `work` on a fresh thread that has joined the namespace at
/// `handle`; the thread ends with it, so no other code runs there.
pub fn run_in<T, F>(handle: &Path, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = File::open(handle)?;
    std::thread::Builder::new()
        .name("eastwatch-netns".into())
        .spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            work()
        })?
        .join()
        .map_err(|_| io::Error::other("namespace worker panicked"))?
}

/// The cookie of the calling thread's network namespace, as
/// `bpf_get_netns_cookie` reports it.
pub fn current_cookie() -> io::Result<u64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("[::1]:0"))?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket and an out-buffer of the advertised length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_namespace_and_its_cookie() {
        let own = std::fs::metadata("/proc/self/ns/net").expect("ns").ino();
        let all = enumerate();
        let ours = all.iter().find(|ns| ns.inode == own).expect("listed");
        let inside = run_in(&ours.handle, current_cookie).expect("enter own netns");
        assert_eq!(inside, current_cookie().expect("cookie"));
    }
}
