//! Finding the cgroup v2 mount. Hybrid hosts mount it at
//! /sys/fs/cgroup/unified, pure-v2 hosts at /sys/fs/cgroup, containers
//! wherever they were given it: never assume, read mountinfo.

use std::path::{Path, PathBuf};

use procfs::process::MountInfo;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MountError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[from] procfs::ProcError),
    #[error("no cgroup2 file system is mounted (is this a cgroup v1-only host?)")]
    NotMounted,
}

/// A cgroup2 mount and the hierarchy path it shows at its top (`/` unless
/// the mount is a bind of a sub-tree, as in some containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    pub root: String,
}

impl Cgroup2Mount {
    pub fn discover() -> Result<Self, MountError> {
        let infos = procfs::process::Process::myself()?.mountinfo()?;
        Self::choose(infos.0.iter())
    }

    /// Prefers a mount of the whole hierarchy over a bind of a sub-tree.
    pub fn choose<'a>(mounts: impl Iterator<Item = &'a MountInfo>) -> Result<Self, MountError> {
        mounts
            .filter(|m| m.fs_type == "cgroup2")
            .min_by_key(|m| (m.root != "/", m.mount_point.as_os_str().len()))
            .map(|m| Self {
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
            })
            .ok_or(MountError::NotMounted)
    }

    /// The directory of a hierarchy path, if the mount shows it.
    pub fn dir_of(&self, hierarchy_path: &str) -> Option<PathBuf> {
        let relative = if self.root == "/" {
            hierarchy_path
        } else {
            let rest = hierarchy_path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        Some(self.mount_point.join(relative.trim_start_matches('/')))
    }

    /// The hierarchy path of a directory under the mount.
    pub fn hierarchy_path_of(&self, dir: &Path) -> Option<String> {
        let relative = dir.strip_prefix(&self.mount_point).ok()?;
        let relative = relative.to_str()?;
        let base = self.root.trim_end_matches('/');
        Some(if relative.is_empty() {
            if base.is_empty() {
                "/".to_owned()
            } else {
                base.to_owned()
            }
        } else {
            format!("{base}/{relative}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> MountInfo {
        MountInfo::from_line(s).expect("mountinfo line")
    }

    #[test]
    fn finds_the_v2_mount_on_a_hybrid_host() {
        let mounts = [
            line("25 24 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755"),
            line("26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"),
            line("27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu"),
        ];
        let mount = Cgroup2Mount::choose(mounts.iter()).expect("found");
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mount.root, "/");
    }

    #[test]
    fn prefers_the_whole_hierarchy_over_a_bind() {
        let mounts = [
            line("30 24 0:23 /kubepods.slice /host/cg rw - cgroup2 cgroup2 rw"),
            line("31 24 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw"),
        ];
        let mount = Cgroup2Mount::choose(mounts.iter()).expect("found");
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn says_so_when_there_is_no_v2_mount() {
        let mounts = [line(
            "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
        )];
        assert!(matches!(
            Cgroup2Mount::choose(mounts.iter()),
            Err(MountError::NotMounted)
        ));
    }

    #[test]
    fn maps_paths_both_ways() {
        let whole = Cgroup2Mount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(whole.dir_of("/a/b"), Some("/sys/fs/cgroup/a/b".into()));
        assert_eq!(whole.dir_of("/"), Some("/sys/fs/cgroup".into()));
        assert_eq!(
            whole.hierarchy_path_of(Path::new("/sys/fs/cgroup/a/b")),
            Some("/a/b".into())
        );
        assert_eq!(
            whole.hierarchy_path_of(Path::new("/sys/fs/cgroup")),
            Some("/".into())
        );

        let bind = Cgroup2Mount {
            mount_point: "/host/cg".into(),
            root: "/kubepods".into(),
        };
        assert_eq!(bind.dir_of("/kubepods/pod1"), Some("/host/cg/pod1".into()));
        assert_eq!(bind.dir_of("/kubepodsX"), None);
        assert_eq!(bind.dir_of("/system.slice"), None);
        assert_eq!(
            bind.hierarchy_path_of(Path::new("/host/cg/pod1")),
            Some("/kubepods/pod1".into())
        );
    }

    #[test]
    fn this_machine_has_a_v2_mount() {
        let mount = Cgroup2Mount::discover().expect("cgroup2 mounted");
        assert!(mount.mount_point.join("cgroup.procs").exists());
    }
}
