//! Command-line options for identity, shared by every command that
//! resolves flows.

use std::{path::PathBuf, time::Duration};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Do not use Kubernetes, even when a cluster config is found.
    #[arg(long)]
    pub no_kubernetes: bool,
    /// kubeconfig to use; by default the pod's service account, else
    /// KUBECONFIG, else ~/.kube/config, as kubectl finds a cluster.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (the downward API's spec.nodeName); its pods are
    /// watched with a field selector. Default: the host name for loopback
    /// peers, and no node-scoped watch.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// The cluster's name in workload identities and on exported records;
    /// default: the kubeconfig context's cluster, else `default`.
    #[arg(long, env = "EASTWATCH_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// Static inventory (YAML) of workloads, services and nodes, for hosts
    /// without a Kubernetes API; it takes precedence over Kubernetes.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// learn, monitor and run wait up to this long for the Kubernetes
    /// watches' first lists before they judge flows, so the first minutes
    /// are not learned or alerted as `unknown`.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "D")]
    pub identity_sync_timeout: Duration,
    /// How long deleted pods, and the addresses they held, stay known, so
    /// flows counted after a pod's DELETED are judged as the pod's (at
    /// least as long as removed cgroups keep their names: 10 minutes).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "D")]
    pub departed_grace: Duration,
}

impl Default for IdentityArgs {
    /// Kubernetes off, no inventory: identities from the host alone.
    fn default() -> Self {
        Self {
            no_kubernetes: true,
            kubeconfig: None,
            node_name: None,
            cluster_name: None,
            trust_domain: "cluster.local".into(),
            inventory: None,
            identity_sync_timeout: Duration::from_secs(15),
            departed_grace: super::kube::store::DEPARTED_GRACE,
        }
    }
}
