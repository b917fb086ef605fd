//! Test cgroups under the real cgroup v2 hierarchy, removed on drop.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

/// Where cgroup2 is mounted and the hierarchy path at its top.
pub fn cgroup2_mount() -> (PathBuf, String) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fs_type = right.split_whitespace().next()?;
            let fields: Vec<&str> = left.split_whitespace().collect();
            (fs_type == "cgroup2").then(|| (PathBuf::from(fields[4]), fields[3].to_owned()))
        })
        .min_by_key(|(mount, root)| (root != "/", mount.as_os_str().len()))
        .expect("a cgroup2 file system is mounted")
}

/// A cgroup made for one test.
pub struct TestCgroup {
    dir: PathBuf,
    path: String,
    id: u64,
}

impl TestCgroup {
    /// Creates `/eastwatch-tests/<unique>` in the v2 hierarchy.
    pub fn new(name: &str) -> Self {
        let (mount, root) = cgroup2_mount();
        let relative = format!("eastwatch-tests/{}", crate::unique(name));
        Self::at(&mount, &root, &relative)
    }

    /// Creates a cgroup at `relative` (parents included) under the mount.
    pub fn at(mount: &Path, root: &str, relative: &str) -> Self {
        let dir = mount.join(relative);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = fs::metadata(&dir).expect("stat cgroup").ino();
        let path = format!("{}/{relative}", root.trim_end_matches('/'));
        Self { dir, path, id }
    }

    /// The cgroup v2 id (the directory's inode).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The path from the root of the hierarchy, as eastwatch reports it.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Kills every process in the cgroup and removes it, waiting until the
    /// kernel lets go of it.
    pub fn remove(&self) {
        assert!(
            self.try_remove(Duration::from_secs(10)),
            "could not remove cgroup {}",
            self.dir.display()
        );
    }

    /// [`TestCgroup::remove`], false if the kernel still holds it after
    /// `timeout`.
    pub fn try_remove(&self, timeout: Duration) -> bool {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return false,
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = fs::write(self.dir.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
