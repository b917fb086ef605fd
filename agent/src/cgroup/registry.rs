//! cgroup id → path, for cgroups that exist, that existed briefly, and that
//! predate the agent.
//!
//! Three sources, in order of preference: the kernel's mkdir/rmdir events
//! (the only way to name a cgroup that is gone before userspace looks), a
//! walk of the tree at start-up, and `open_by_handle_at` for anything missed
//! (a cgroup v2 id is its kernfs file handle).

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::mount::Cgroup2Mount;
use crate::{
    flow::{CgroupRef, CgroupUnknown},
    kernel::decode::{CgroupChange, CgroupChangeKind},
};

/// What the registry knows of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Live(Arc<str>),
    /// Removed; the path is kept for late flows.
    Removed(Arc<str>),
    Unknown,
}

/// Totals for the agent's own report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub scanned: u64,
    pub created: u64,
    pub removed: u64,
    pub resolved_by_handle: u64,
    pub unresolved: u64,
    pub truncated_paths: u64,
}

pub struct CgroupRegistry {
    mount: Cgroup2Mount,
    mount_dir: Option<File>,
    live: HashMap<u64, Arc<str>>,
    removed: HashMap<u64, (Arc<str>, Instant)>,
    /// Removal order, for expiry.
    removed_order: VecDeque<(u64, Instant)>,
    retention: Duration,
    max_removed: usize,
    stats: RegistryStats,
}

/// `FILEID_KERNFS`: the handle type of kernfs (and so cgroup2) files.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

impl CgroupRegistry {
    /// Removed cgroups are remembered for `retention`, at most `max_removed`.
    pub fn new(mount: Cgroup2Mount, retention: Duration, max_removed: usize) -> Self {
        let mount_dir = File::open(&mount.mount_point).ok();
        Self {
            mount,
            mount_dir,
            live: HashMap::new(),
            removed: HashMap::new(),
            removed_order: VecDeque::new(),
            retention,
            max_removed,
            stats: RegistryStats::default(),
        }
    }

    #[cfg(test)]
    pub fn stats(&self) -> RegistryStats {
        self.stats
    }

    /// Walks the whole tree; returns how many cgroups it found.
    pub fn scan(&mut self) -> io::Result<usize> {
        let mut stack = vec![self.mount.mount_point.clone()];
        let mut found = 0;
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                // Removed while we walked: its rmdir event will say so.
                continue;
            };
            if let Some(path) = self.mount.hierarchy_path_of(&dir) {
                self.live.insert(meta.ino(), path.into());
                found += 1;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        self.stats.scanned += found as u64;
        Ok(found)
    }

    /// Applies a kernel mkdir/rmdir event.
    pub fn apply(&mut self, change: &CgroupChange) {
        if change.truncated {
            self.stats.truncated_paths += 1;
        }
        let path: Arc<str> = change.path.as_str().into();
        match change.kind {
            CgroupChangeKind::Created => {
                self.stats.created += 1;
                self.removed.remove(&change.cgroup_id);
                self.live.insert(change.cgroup_id, path);
            }
            CgroupChangeKind::Removed => {
                self.stats.removed += 1;
                let path = self.live.remove(&change.cgroup_id).unwrap_or(path);
                let now = Instant::now();
                self.removed.insert(change.cgroup_id, (path, now));
                self.removed_order.push_back((change.cgroup_id, now));
                self.expire(now);
            }
        }
    }

    /// Forgets removed cgroups older than the retention, and the oldest
    /// beyond the cap, so memory stays bounded under churn.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(id, at)) = self.removed_order.front() {
            let too_old = now.saturating_duration_since(at) > self.retention;
            if !too_old && self.removed_order.len() <= self.max_removed {
                break;
            }
            self.removed_order.pop_front();
            // Only if no newer removal of the same id replaced the entry.
            if self.removed.get(&id).is_some_and(|(_, when)| *when == at) {
                self.removed.remove(&id);
            }
        }
    }

    /// The path of `id`, asking the kernel by handle when it was missed.
    pub fn lookup(&mut self, id: u64) -> Lookup {
        if let Some(path) = self.live.get(&id) {
            return Lookup::Live(path.clone());
        }
        if let Some((path, _)) = self.removed.get(&id) {
            return Lookup::Removed(path.clone());
        }
        match self.open_by_id(id) {
            Some(path) => {
                self.stats.resolved_by_handle += 1;
                let path: Arc<str> = path.into();
                self.live.insert(id, path.clone());
                Lookup::Live(path)
            }
            None => {
                self.stats.unresolved += 1;
                Lookup::Unknown
            }
        }
    }

    /// The owner reference a flow carries.
    pub fn cgroup_ref(&mut self, id: u64) -> CgroupRef {
        if id == 0 {
            return CgroupRef {
                id,
                path: None,
                unknown: Some(CgroupUnknown::NoOwner),
                removed: false,
            };
        }
        let (path, removed) = match self.lookup(id) {
            Lookup::Live(path) => (Some(path), false),
            Lookup::Removed(path) => (Some(path), true),
            Lookup::Unknown => (None, false),
        };
        CgroupRef {
            id,
            unknown: path.is_none().then_some(CgroupUnknown::Gone),
            path,
            removed,
        }
    }

    /// The id of a hierarchy path (the inode of its directory).
    pub fn id_of(&self, hierarchy_path: &str) -> Option<u64> {
        let dir = self.mount.dir_of(hierarchy_path)?;
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }

    /// `open_by_handle_at` with the id as a kernfs handle, then the path
    /// the kernel gives the open directory. Needs CAP_DAC_READ_SEARCH.
    fn open_by_id(&self, id: u64) -> Option<String> {
        let mount_dir = self.mount_dir.as_ref()?;
        let mut handle = KernfsHandle {
            handle_bytes: size_of::<u64>() as u32,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid file_handle with an 8-byte payload;
        // the returned descriptor is owned by the File below.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount_dir.as_raw_fd(),
                std::ptr::from_mut(&mut handle).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned to us and nothing else owns it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let target = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        self.mount.hierarchy_path_of(Path::new(&target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> CgroupRegistry {
        CgroupRegistry::new(
            Cgroup2Mount {
                mount_point: "/nonexistent-eastwatch-test".into(),
                root: "/".into(),
            },
            Duration::from_secs(60),
            2,
        )
    }

    fn change(kind: CgroupChangeKind, id: u64, path: &str) -> CgroupChange {
        CgroupChange {
            kind,
            cgroup_id: id,
            path: path.into(),
            truncated: false,
        }
    }

    #[test]
    fn remembers_a_cgroup_after_it_is_removed() {
        let mut registry = registry();
        registry.apply(&change(CgroupChangeKind::Created, 10, "/a"));
        assert_eq!(registry.lookup(10), Lookup::Live("/a".into()));
        registry.apply(&change(CgroupChangeKind::Removed, 10, "/a"));
        assert_eq!(registry.lookup(10), Lookup::Removed("/a".into()));
        let owner = registry.cgroup_ref(10);
        assert!(owner.removed);
        assert_eq!(owner.path.as_deref(), Some("/a"));
    }

    #[test]
    fn removed_cgroups_are_bounded() {
        let mut registry = registry();
        for id in 1..=5 {
            registry.apply(&change(CgroupChangeKind::Created, id, &format!("/c{id}")));
            registry.apply(&change(CgroupChangeKind::Removed, id, &format!("/c{id}")));
        }
        assert_eq!(registry.removed.len(), 2, "capped at max_removed");
        assert_eq!(registry.lookup(5), Lookup::Removed("/c5".into()));
        assert_eq!(registry.lookup(1), Lookup::Unknown);
    }

    #[test]
    fn removed_cgroups_expire() {
        let mut registry = registry();
        registry.apply(&change(CgroupChangeKind::Removed, 3, "/x"));
        registry.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(registry.lookup(3), Lookup::Unknown);
    }

    #[test]
    fn id_zero_means_no_owner() {
        let mut registry = registry();
        let owner = registry.cgroup_ref(0);
        assert_eq!(owner.unknown, Some(CgroupUnknown::NoOwner));
        assert_eq!(owner.path, None);
    }

    #[test]
    fn scans_and_resolves_by_handle_on_this_host() {
        let mount = Cgroup2Mount::discover().expect("cgroup2 mounted");
        let mut registry = CgroupRegistry::new(mount.clone(), Duration::from_secs(60), 16);
        let dir = mount
            .mount_point
            .join(format!("eastwatch-registry-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir in cgroup2 (needs root)");
        let id = std::fs::metadata(&dir).expect("stat").ino();
        let expected = mount.hierarchy_path_of(&dir).expect("under mount");

        // Not scanned yet: found through open_by_handle_at.
        assert_eq!(registry.lookup(id), Lookup::Live(expected.as_str().into()));
        assert_eq!(registry.stats().resolved_by_handle, 1);

        let mut fresh = CgroupRegistry::new(mount, Duration::from_secs(60), 16);
        assert!(fresh.scan().expect("scan") > 1);
        assert_eq!(fresh.lookup(id), Lookup::Live(expected.as_str().into()));
        assert_eq!(fresh.id_of(&expected), Some(id));
        std::fs::remove_dir(&dir).expect("rmdir");
    }
}
