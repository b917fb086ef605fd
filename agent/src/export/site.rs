//! Where the agent runs: host, node and cluster names for the OTLP
//! resource. Read in one place so the identity options (`--node-name`,
//! `--cluster-name`) can take over when they land.

/// The names that go on every record's resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// The kernel's host name.
    pub host: Option<String>,
    /// The Kubernetes node (downward API `spec.nodeName` as `NODE_NAME`).
    pub node: Option<String>,
    /// The cluster's name (`EASTWATCH_CLUSTER_NAME`); also settable through
    /// `OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=...`.
    pub cluster: Option<String>,
}

impl Site {
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            host: host_name(),
            node: var("NODE_NAME"),
            cluster: var("EASTWATCH_CLUSTER_NAME"),
        }
    }

    /// The node's name for alerts: the Kubernetes node, else the host.
    pub fn node_or_host(&self) -> Option<String> {
        self.node.clone().or_else(|| self.host.clone())
    }
}

/// The kernel's host name (uname), without another nix feature.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
