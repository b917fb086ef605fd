//! The demo's shop: namespace `shop` with Deployments `frontend`, `api`
//! and `db`, Service `api` (port 80 → the pods' 8080) and Service `db`
//! (5432). The demo runs it; the export and map tests describe the same
//! cluster to the Kubernetes API and read the baseline the demo learns
//! (`tests/fixtures/demo/`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{
    Lan,
    kube_api::{
        FakeApi, Resource,
        objects::{self, PodSpec},
    },
};

pub const NAMESPACE: &str = "shop";
pub const NODE: &str = "demo-node";

/// One tier: a Deployment with one pod on member `i` of the LAN.
pub struct Tier {
    pub name: &'static str,
    pub hash: &'static str,
    pub suffix: &'static str,
    /// The port its server listens on.
    pub serves: Option<u16>,
}

pub const TIERS: [Tier; 3] = [
    Tier {
        name: "frontend",
        hash: "7d9c8b6f5",
        suffix: "x2k4p",
        serves: None,
    },
    Tier {
        name: "api",
        hash: "5f6d7c8b9",
        suffix: "q8w2e",
        serves: Some(8080),
    },
    Tier {
        name: "db",
        hash: "6b7c5d9f8",
        suffix: "m3n7r",
        serves: Some(5432),
    },
];
pub const FRONTEND: usize = 0;
pub const API: usize = 1;
pub const DB: usize = 2;

/// A Service: its ClusterIP and port, and the tier behind it.
pub struct Service {
    pub name: &'static str,
    pub cluster_ip: &'static str,
    pub port: u16,
    pub tier: usize,
}

impl Service {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.cluster_ip, self.port)
    }

    /// The port its pods receive (the Service's targetPort).
    pub fn target(&self) -> u16 {
        TIERS[self.tier].serves.unwrap_or(self.port)
    }
}

pub const API_SERVICE: usize = 0;
pub const DB_SERVICE: usize = 1;
pub const SERVICES: [Service; 2] = [
    Service {
        name: "api",
        cluster_ip: "10.78.96.10",
        port: 80,
        tier: API,
    },
    Service {
        name: "db",
        cluster_ip: "10.78.96.11",
        port: 5432,
        tier: DB,
    },
];

pub fn pod_name(tier: usize) -> String {
    let t = &TIERS[tier];
    format!("{}-{}-{}", t.name, t.hash, t.suffix)
}

/// Every pod's labels: `app` and `tier`, both the tier's name.
pub fn labels(tier: usize) -> Value {
    json!({"app": TIERS[tier].name, "tier": TIERS[tier].name})
}

/// The whole shop as the API describes it: each tier's Deployment,
/// ReplicaSet and pod (with `uids[tier]`), the Services with their
/// EndpointSlices, and the node.
pub fn describe(api: &FakeApi, uids: &[String]) {
    for (i, tier) in TIERS.iter().enumerate() {
        api.apply_deployment_pod(&PodSpec {
            namespace: NAMESPACE,
            deployment: tier.name,
            hash: tier.hash,
            suffix: tier.suffix,
            uid: &uids[i],
            node: NODE,
            ip: &Lan::v4(i),
            service_account: tier.name,
            labels: &labels(i),
        });
    }
    for service in &SERVICES {
        api.apply(
            Resource::Services,
            objects::service(
                NAMESPACE,
                service.name,
                service.cluster_ip,
                service.port,
                service.target(),
                &json!({"app": TIERS[service.tier].name}),
            ),
        );
        api.apply(
            Resource::EndpointSlices,
            objects::endpoint_slice(
                NAMESPACE,
                service.name,
                "7xk2p",
                service.target(),
                &[(
                    pod_name(service.tier).as_str(),
                    Lan::v4(service.tier).as_str(),
                    NODE,
                )],
            ),
        );
    }
    api.apply(Resource::Nodes, objects::node(NODE, "192.0.2.1"));
}

/// A file of `tests/fixtures/demo/`: what the demo learned (baseline,
/// evidence) and alerted.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/demo")
        .join(name)
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
