//! Cgroup subtrees left out of learning and judging (the node's monitoring
//! stack, say): their flows are still observed and counted, never learned
//! and never alerted.

/// `--exclude-cgroup` paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    /// Normalised: a leading `/`, no trailing one (the root stays `/`).
    paths: Vec<String>,
}

impl Exclusions {
    pub fn new(paths: &[String]) -> Self {
        let paths = paths
            .iter()
            .map(|p| {
                let trimmed = p.trim().trim_end_matches('/');
                let trimmed = trimmed.strip_prefix('/').unwrap_or(trimmed);
                format!("/{trimmed}")
            })
            .collect();
        Self { paths }
    }

    /// `path` is an excluded cgroup or beneath one. The root (`/`) excludes
    /// only processes in the root itself, never the whole tree.
    pub fn excludes(&self, path: Option<&str>) -> bool {
        let Some(path) = path else { return false };
        self.paths.iter().any(|excluded| {
            path == excluded
                || (excluded != "/"
                    && path
                        .strip_prefix(excluded.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_and_nothing_that_merely_shares_its_prefix() {
        let x = Exclusions::new(&["/system.slice/otel.service/".into(), "monitoring".into()]);
        assert!(x.excludes(Some("/system.slice/otel.service")));
        assert!(x.excludes(Some("/system.slice/otel.service/worker")));
        assert!(x.excludes(Some("/monitoring/agent")));
        assert!(!x.excludes(Some("/system.slice/otel.service2")));
        assert!(!x.excludes(Some("/system.slice")));
        assert!(!x.excludes(None));
    }

    #[test]
    fn the_root_excludes_only_itself() {
        let x = Exclusions::new(&["/".into()]);
        assert!(x.excludes(Some("/")));
        assert!(!x.excludes(Some("/kubepods.slice")));
        assert!(!Exclusions::new(&[]).excludes(Some("/")));
    }
}
