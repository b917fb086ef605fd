//! Where the agent runs: host, node and cluster names for the OTLP
//! resource and for alerts.

use crate::identity::{IdentityArgs, IdentityResolver};

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
    /// The node the identity options name, the cluster the resolver
    /// named (flag or kubeconfig, never its `default`), and this host.
    pub fn new(identity: &IdentityArgs, resolver: &IdentityResolver) -> Self {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            host: host_name(),
            node: given(identity.node_name.as_deref()),
            cluster: given(resolver.named_cluster()),
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
