//! What a flow's ends are, in terms a SOC analyst and a baseline reviewer
//! use: workloads, host services, nodes and external peers. Never pod
//! names or pod-template hashes: an identity survives restarts, rollouts
//! and scaling.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::flow::{Direction, Flow};

/// Kubernetes workload kinds (the controller at the top of a pod's owner
/// chain, or `Pod` for a bare pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicaSet,
    ReplicationController,
    Pod,
    /// Any other owner kind (an operator's custom resource, say).
    Other(String),
}

impl WorkloadKind {
    /// The Kubernetes `kind`, e.g. `Deployment`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::ReplicaSet => "ReplicaSet",
            Self::ReplicationController => "ReplicationController",
            Self::Pod => "Pod",
            Self::Other(kind) => kind,
        }
    }

    /// Parses a kind, case-insensitively for the known ones.
    pub fn parse(text: &str) -> Self {
        match text.to_ascii_lowercase().as_str() {
            "deployment" => Self::Deployment,
            "statefulset" => Self::StatefulSet,
            "daemonset" => Self::DaemonSet,
            "job" => Self::Job,
            "cronjob" => Self::CronJob,
            "replicaset" => Self::ReplicaSet,
            "replicationcontroller" => Self::ReplicationController,
            "pod" => Self::Pod,
            _ => Self::Other(text.to_owned()),
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WorkloadKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WorkloadKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

/// A set of pods (or, from an inventory, processes) that share code,
/// service account and purpose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub cluster: String,
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
    pub service_account: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// Container runtimes eastwatch recognises in cgroup paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerRuntime {
    Containerd,
    Crio,
    Docker,
    Podman,
}

impl ContainerRuntime {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "crio",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// One end of a flow. The canonical text form ([`Identity::canonical`]) is
/// what baselines, alerts and `baseline explain` use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Identity {
    /// A Kubernetes workload (or an inventory workload shaped like one).
    Workload(Workload),
    /// A systemd unit on a plain host, e.g. `nginx.service`.
    SystemdUnit { unit: String },
    /// A container outside Kubernetes.
    Container {
        runtime: ContainerRuntime,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The last resort for a local socket: its cgroup v2 path.
    Cgroup { path: String },
    /// A node of the cluster: its host network, and hostNetwork pods seen
    /// from elsewhere.
    Node { name: String },
    /// Any address no one in the cluster owns.
    External { address: IpAddr },
    /// Nothing better is known; `what` says what there was to go on.
    Unknown { what: String },
}

impl Identity {
    /// The one text form of an identity:
    ///
    /// | identity | canonical |
    /// |---|---|
    /// | workload | `workload:<namespace>/<kind, lowercase>/<name>` |
    /// | systemd unit | `systemd:<unit>` |
    /// | container | `container:<runtime>/<name, else the first 12 of the id>` |
    /// | cgroup | `cgroup:<path>` |
    /// | node | `node:<name>` |
    /// | external | `external:<address>` |
    /// | unknown | `unknown:<what>` |
    pub fn canonical(&self) -> String {
        match self {
            Self::Workload(w) => format!(
                "workload:{}/{}/{}",
                w.namespace,
                w.kind.as_str().to_ascii_lowercase(),
                w.name
            ),
            Self::SystemdUnit { unit } => format!("systemd:{unit}"),
            Self::Container { runtime, id, name } => {
                let short = name
                    .clone()
                    .unwrap_or_else(|| id.chars().take(12).collect());
                format!("container:{}/{short}", runtime.as_str())
            }
            Self::Cgroup { path } => format!("cgroup:{path}"),
            Self::Node { name } => format!("node:{name}"),
            Self::External { address } => format!("external:{address}"),
            Self::Unknown { what } => format!("unknown:{what}"),
        }
    }

    pub fn workload(&self) -> Option<&Workload> {
        match self {
            Self::Workload(w) => Some(w),
            _ => None,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.workload().map(|w| w.namespace.as_str())
    }

    pub fn service_account(&self) -> Option<&str> {
        self.workload().map(|w| w.service_account.as_str())
    }

    pub fn spiffe_id(&self, trust_domain: &str) -> Option<String> {
        self.workload().map(|w| w.spiffe_id(trust_domain))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// A Kubernetes Service, named where the remote address was its ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// The concrete pod behind a workload identity (for alerts, never for
/// matching: pods come and go).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One end of a flow, resolved as far as the agent could.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedEnd {
    pub identity: Identity,
    /// Set when `identity` is a fallback: why nothing better is known
    /// (e.g. "no pod has 10.1.2.3", "API server unreachable", "cgroup gone").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
    /// The Service whose ClusterIP was dialled; `identity` is then its
    /// backend workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// The backend's port the Service's dialled port leads to (its
    /// `targetPort`, as the EndpointSlices give it): the server's port, so
    /// one connection is one edge whichever end saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` for
    /// workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// When a Service's endpoints span several workloads: the ones not
    /// chosen as `identity` (which is the first by canonical id).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_backends: Vec<Identity>,
}

impl ResolvedEnd {
    /// An end known only as `identity`.
    pub fn plain(identity: Identity) -> Self {
        Self {
            identity,
            unresolved: None,
            service: None,
            target_port: None,
            pod: None,
            container_id: None,
            spiffe_id: None,
            other_backends: Vec::new(),
        }
    }
}

/// A flow with both ends resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFlow {
    pub flow: Flow,
    /// The socket owner on this node.
    pub local: ResolvedEnd,
    /// The peer.
    pub remote: ResolvedEnd,
}

/// One end of a resolved flow: who, and at which address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowEnd<'a> {
    pub end: &'a ResolvedEnd,
    pub address: SocketAddr,
}

impl ResolvedFlow {
    /// The client (who connected or sent first): the local end of an
    /// egress flow, the remote end of an ingress one. Both observations of
    /// one connection name the same client.
    pub fn client(&self) -> FlowEnd<'_> {
        match self.flow.key.direction {
            Direction::Egress => self.local_end(),
            Direction::Ingress => self.remote_end(),
        }
    }

    /// The server: the other end from [`ResolvedFlow::client`].
    pub fn server(&self) -> FlowEnd<'_> {
        match self.flow.key.direction {
            Direction::Egress => self.remote_end(),
            Direction::Ingress => self.local_end(),
        }
    }

    fn local_end(&self) -> FlowEnd<'_> {
        FlowEnd {
            end: &self.local,
            address: self.flow.local,
        }
    }

    fn remote_end(&self) -> FlowEnd<'_> {
        FlowEnd {
            end: &self.remote,
            address: self.flow.remote,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend() -> Workload {
        Workload {
            cluster: "prod".into(),
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "frontend".into(),
            service_account: "frontend".into(),
            labels: BTreeMap::from([("app".into(), "frontend".into())]),
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            Identity::Workload(frontend()).canonical(),
            "workload:shop/deployment/frontend"
        );
        assert_eq!(
            Identity::SystemdUnit {
                unit: "nginx.service".into()
            }
            .canonical(),
            "systemd:nginx.service"
        );
        assert_eq!(
            Identity::Container {
                runtime: ContainerRuntime::Docker,
                id: "0123456789abcdef".into(),
                name: None
            }
            .canonical(),
            "container:docker/0123456789ab"
        );
        assert_eq!(
            Identity::External {
                address: "203.0.113.7".parse().expect("ip")
            }
            .canonical(),
            "external:203.0.113.7"
        );
    }

    #[test]
    fn spiffe_ids_name_namespace_and_service_account() {
        assert_eq!(
            frontend().spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/frontend"
        );
        assert_eq!(
            Identity::Node { name: "n1".into() }.spiffe_id("cluster.local"),
            None
        );
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [
            "Deployment",
            "statefulset",
            "DAEMONSET",
            "Job",
            "CronJob",
            "Pod",
        ] {
            let parsed = WorkloadKind::parse(kind);
            assert!(!matches!(parsed, WorkloadKind::Other(_)), "{kind}");
            assert_eq!(WorkloadKind::parse(parsed.as_str()), parsed);
        }
        assert_eq!(
            WorkloadKind::parse("Rollout"),
            WorkloadKind::Other("Rollout".into())
        );
    }
}
