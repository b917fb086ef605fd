//! Where the agent runs: host, node and cluster names for the OTLP
//! resource, for alerts, and for loopback peers.

/// The names that go on every record's resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// The kernel's host name.
    pub host: Option<String>,
    /// The Kubernetes node (`--node-name`, or the downward API's
    /// `spec.nodeName` as `NODE_NAME`).
    pub node: Option<String>,
    /// The cluster's name (`--cluster-name` or `EASTWATCH_CLUSTER_NAME`, else
    /// the kubeconfig's);
    /// also settable through `OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=...`.
    pub cluster: Option<String>,
}

impl Site {
    /// This host, the node `node` names and the cluster `cluster` names
    /// (blank names count as none).
    pub fn new(node: Option<&str>, cluster: Option<&str>) -> Self {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            host: host_name(),
            node: given(node),
            cluster: given(cluster),
        }
    }

    /// The node's name for alerts and loopback peers: the Kubernetes node,
    /// else the host.
    pub fn node_or_host(&self) -> Option<String> {
        self.node.clone().or_else(|| self.host.clone())
    }
}

/// The kernel's host name (uname), without another nix feature.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
