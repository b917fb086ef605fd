//! A static inventory: the identity model where no Kubernetes API exists
//! (plain hosts, labs, tests). A YAML file lists workloads with the cgroups
//! and pids they run in and the addresses they own, Services with their
//! addresses and backends, and nodes:
//!
//! ```yaml
//! cluster: lab                 # default: --cluster-name
//! workloads:
//!   - namespace: shop
//!     kind: Deployment
//!     name: frontend
//!     serviceAccount: frontend # default: default
//!     labels: {app: frontend}
//!     cgroups: [/system.slice/frontend.service]   # and everything below
//!     pids: [4242]
//!     ips: [10.0.0.5]
//! services:
//!   - namespace: shop
//!     name: api
//!     ips: [10.96.0.10]
//!     backends: [shop/deployment/api]
//! nodes:
//!   - name: node-a
//!     ips: [192.0.2.10]
//! ```
//!
//! Mistakes are reported as `file:line:col: reason`.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use serde_saphyr::Spanned;

use eastwatch_policy::{
    file::{MAX_INPUT_BYTES, ReadError, read_text_bounded},
    identity::{Identity, ServiceRef, Workload, WorkloadKind},
};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: ReadError },
    /// Where in the file, and what is wrong there.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        reason: String,
    },
    /// A YAML error the parser could not place.
    #[error("{}: {reason}", path.display())]
    Unplaced { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    workloads: Vec<WorkloadEntry>,
    #[serde(default)]
    services: Vec<ServiceEntry>,
    #[serde(default)]
    nodes: Vec<NodeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WorkloadEntry {
    namespace: String,
    kind: Spanned<String>,
    name: String,
    #[serde(default = "default_service_account")]
    service_account: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    cgroups: Vec<Spanned<String>>,
    #[serde(default)]
    pids: Vec<Spanned<u32>>,
    #[serde(default)]
    ips: Vec<Spanned<IpAddr>>,
}

fn default_service_account() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    namespace: String,
    name: String,
    #[serde(default)]
    ips: Vec<Spanned<IpAddr>>,
    /// Workloads as `namespace/kind/name`.
    #[serde(default)]
    backends: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    #[serde(default)]
    ips: Vec<Spanned<IpAddr>>,
}

/// Who owns an address, by the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressOwner {
    Workload(usize),
    Service(usize),
    Node(usize),
}

#[derive(Debug)]
struct InventoryService {
    service: ServiceRef,
    /// Indexes into `workloads`, sorted by canonical id.
    backends: Vec<usize>,
}

/// What the inventory says about an address.
#[derive(Debug, PartialEq, Eq)]
pub enum AddressMatch<'a> {
    Workload(&'a Arc<Workload>),
    /// Backends sorted by canonical id; possibly none.
    Service {
        service: &'a ServiceRef,
        backends: Vec<&'a Arc<Workload>>,
    },
    Node(&'a str),
}

/// A loaded, validated inventory.
#[derive(Debug)]
pub struct Inventory {
    path: PathBuf,
    workloads: Vec<Arc<Workload>>,
    by_cgroup: HashMap<String, usize>,
    by_pid: HashMap<u32, usize>,
    by_address: HashMap<IpAddr, AddressOwner>,
    services: Vec<InventoryService>,
    nodes: Vec<String>,
}

impl Inventory {
    pub fn load(path: &Path, default_cluster: &str) -> Result<Self, InventoryError> {
        let text =
            read_text_bounded(path, MAX_INPUT_BYTES).map_err(|source| InventoryError::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(path, &text, default_cluster)
    }

    pub fn parse(path: &Path, text: &str, default_cluster: &str) -> Result<Self, InventoryError> {
        let options = eastwatch_policy::baseline::parse::options_for(text);
        let file: File =
            serde_saphyr::from_str_with_options(text, options).map_err(|err| {
                match err.location() {
                    Some(at) if at.line() > 0 => InventoryError::Invalid {
                        path: path.to_owned(),
                        line: at.line(),
                        column: at.column(),
                        reason: first_line(&err.to_string()),
                    },
                    _ => InventoryError::Unplaced {
                        path: path.to_owned(),
                        reason: first_line(&err.to_string()),
                    },
                }
            })?;
        Builder {
            path,
            inventory: Inventory {
                path: path.to_owned(),
                workloads: Vec::new(),
                by_cgroup: HashMap::new(),
                by_pid: HashMap::new(),
                by_address: HashMap::new(),
                services: Vec::new(),
                nodes: Vec::new(),
            },
        }
        .build(file, default_cluster)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    /// The workload whose cgroup is `path` or an ancestor of it (the
    /// deepest listed one wins).
    pub fn by_cgroup(&self, path: &str) -> Option<&Arc<Workload>> {
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(&index) = self.by_cgroup.get(key) {
                return Some(&self.workloads[index]);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }

    pub fn by_pid(&self, pid: u32) -> Option<&Arc<Workload>> {
        self.by_pid.get(&pid).map(|&i| &self.workloads[i])
    }

    pub fn by_address(&self, address: IpAddr) -> Option<AddressMatch<'_>> {
        Some(match *self.by_address.get(&address)? {
            AddressOwner::Workload(i) => AddressMatch::Workload(&self.workloads[i]),
            AddressOwner::Service(i) => {
                let service = &self.services[i];
                AddressMatch::Service {
                    service: &service.service,
                    backends: service
                        .backends
                        .iter()
                        .map(|&b| &self.workloads[b])
                        .collect(),
                }
            }
            AddressOwner::Node(i) => AddressMatch::Node(&self.nodes[i]),
        })
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

struct Builder<'a> {
    path: &'a Path,
    inventory: Inventory,
}

impl Builder<'_> {
    fn invalid<T>(&self, at: &Spanned<T>, reason: String) -> InventoryError {
        InventoryError::Invalid {
            path: self.path.to_owned(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            reason,
        }
    }

    fn claim(&mut self, at: &Spanned<IpAddr>, owner: AddressOwner) -> Result<(), InventoryError> {
        let address = at.value.to_canonical();
        if self.inventory.by_address.insert(address, owner).is_some() {
            return Err(self.invalid(at, format!("{address} is listed twice")));
        }
        Ok(())
    }

    fn build(mut self, file: File, default_cluster: &str) -> Result<Inventory, InventoryError> {
        let cluster = file.cluster.unwrap_or_else(|| default_cluster.to_owned());
        // `namespace/kind/name` → index, for the services' backends.
        let mut by_canonical = HashMap::new();
        for entry in file.workloads {
            let workload = self.workload(entry, &cluster, &mut by_canonical)?;
            self.inventory.workloads.push(Arc::new(workload));
        }
        for entry in file.services {
            let service = self.service(entry, &by_canonical)?;
            self.inventory.services.push(service);
        }
        for entry in file.nodes {
            let index = self.inventory.nodes.len();
            for ip in &entry.ips {
                self.claim(ip, AddressOwner::Node(index))?;
            }
            self.inventory.nodes.push(entry.name);
        }
        Ok(self.inventory)
    }

    /// The next workload, its cgroups, pids and addresses claimed.
    fn workload(
        &mut self,
        entry: WorkloadEntry,
        cluster: &str,
        by_canonical: &mut HashMap<String, usize>,
    ) -> Result<Workload, InventoryError> {
        let index = self.inventory.workloads.len();
        if entry.kind.value.trim().is_empty() {
            return Err(self.invalid(&entry.kind, "kind is empty".into()));
        }
        let workload = Workload {
            cluster: cluster.to_owned(),
            namespace: entry.namespace,
            kind: WorkloadKind::parse(&entry.kind.value),
            name: entry.name,
            service_account: entry.service_account,
            labels: entry.labels,
        };
        let canonical = Identity::Workload(workload.clone()).canonical();
        let key = canonical.trim_start_matches("workload:").to_owned();
        if by_canonical.insert(key, index).is_some() {
            return Err(self.invalid(&entry.kind, format!("{canonical} is listed twice")));
        }
        for cgroup in &entry.cgroups {
            if !cgroup.value.starts_with('/') {
                return Err(self.invalid(
                    cgroup,
                    format!(
                        "cgroup {:?} must be a path from the cgroup v2 root, starting with /",
                        cgroup.value
                    ),
                ));
            }
            let normal = match cgroup.value.trim_end_matches('/') {
                "" => "/".to_owned(),
                trimmed => trimmed.to_owned(),
            };
            if self.inventory.by_cgroup.insert(normal, index).is_some() {
                return Err(
                    self.invalid(cgroup, format!("cgroup {} is listed twice", cgroup.value))
                );
            }
        }
        for pid in &entry.pids {
            if self.inventory.by_pid.insert(pid.value, index).is_some() {
                return Err(self.invalid(pid, format!("pid {} is listed twice", pid.value)));
            }
        }
        for ip in &entry.ips {
            self.claim(ip, AddressOwner::Workload(index))?;
        }
        Ok(workload)
    }

    /// The next Service, its backends found among the workloads and its
    /// addresses claimed.
    fn service(
        &mut self,
        entry: ServiceEntry,
        by_canonical: &HashMap<String, usize>,
    ) -> Result<InventoryService, InventoryError> {
        let index = self.inventory.services.len();
        let mut backends = Vec::new();
        for backend in &entry.backends {
            let key = backend.value.trim_start_matches("workload:");
            match by_canonical.get(&normalise_reference(key)) {
                Some(&workload) => backends.push(workload),
                None => {
                    return Err(self.invalid(
                        backend,
                        format!(
                            "backend {:?} names no workload in this file (write namespace/kind/name)",
                            backend.value
                        ),
                    ));
                }
            }
        }
        let workloads = &self.inventory.workloads;
        backends.sort_by_key(|&b| Identity::Workload((*workloads[b]).clone()).canonical());
        backends.dedup();
        for ip in &entry.ips {
            self.claim(ip, AddressOwner::Service(index))?;
        }
        Ok(InventoryService {
            service: ServiceRef {
                namespace: entry.namespace,
                name: entry.name,
            },
            backends,
        })
    }
}

/// `shop/Deployment/api` → `shop/deployment/api`.
fn normalise_reference(reference: &str) -> String {
    let mut parts: Vec<String> = reference.split('/').map(str::to_owned).collect();
    if parts.len() == 3 {
        parts[1] = WorkloadKind::parse(&parts[1]).as_str().to_ascii_lowercase();
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster: lab
workloads:
  - namespace: shop
    kind: Deployment
    name: frontend
    serviceAccount: frontend
    labels: {app: frontend}
    cgroups: [/system.slice/frontend.service]
    pids: [4242]
    ips: [10.0.0.5]
  - namespace: shop
    kind: statefulset
    name: db
    ips: ["fd00::5"]
services:
  - namespace: shop
    name: db
    ips: [10.96.0.10]
    backends: [shop/StatefulSet/db, workload:shop/deployment/frontend]
nodes:
  - name: node-a
    ips: [192.0.2.10]
"#;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(Path::new("inv.yaml"), text, "default")
    }

    #[test]
    fn workloads_by_cgroup_pid_and_address() {
        let inv = load(GOOD).expect("valid");
        let frontend = inv
            .by_cgroup("/system.slice/frontend.service/worker")
            .expect("below the listed cgroup");
        assert_eq!(frontend.name, "frontend");
        assert_eq!(frontend.cluster, "lab");
        assert_eq!(frontend.service_account, "frontend");
        assert_eq!(inv.by_cgroup("/system.slice/frontend.service2"), None);
        assert_eq!(inv.by_cgroup("/system.slice"), None);
        assert_eq!(inv.by_pid(4242).map(|w| w.name.as_str()), Some("frontend"));
        let db = match inv.by_address("fd00::5".parse().expect("ip")) {
            Some(AddressMatch::Workload(w)) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (db.kind.clone(), db.service_account.as_str()),
            (WorkloadKind::StatefulSet, "default")
        );
        match inv.by_address("10.96.0.10".parse().expect("ip")) {
            Some(AddressMatch::Service { service, backends }) => {
                assert_eq!(service.name, "db");
                let names: Vec<&str> = backends.iter().map(|w| w.name.as_str()).collect();
                // Sorted by canonical id: deployment before statefulset.
                assert_eq!(names, ["frontend", "db"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            inv.by_address("192.0.2.10".parse().expect("ip")),
            Some(AddressMatch::Node("node-a"))
        );
        // v4-mapped addresses are the same address.
        assert!(
            inv.by_address(
                "::ffff:10.0.0.5"
                    .parse::<IpAddr>()
                    .expect("ip")
                    .to_canonical()
            )
            .is_some()
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let cases = [
            (
                "workloads:\n  - namespace: a\n    kind: Deployment\n    name: x\n    ips: [10.0.0.1, nonsense]\n",
                "inv.yaml:5:",
            ),
            (
                "workloads:\n  - namespace: a\n    kind: Deployment\n    name: x\n    cgroups: [relative/path]\n",
                "inv.yaml:5:15: cgroup \"relative/path\" must be a path",
            ),
            (
                "services:\n  - namespace: a\n    name: s\n    backends: [a/deployment/missing]\n",
                "inv.yaml:4:16: backend \"a/deployment/missing\" names no workload",
            ),
            (
                "nodes:\n  - name: a\n    ips: [10.0.0.1]\n  - name: b\n    ips: [10.0.0.1]\n",
                "inv.yaml:5:11: 10.0.0.1 is listed twice",
            ),
            ("workloads:\n  - namespace: a\n    nmae: x\n", "inv.yaml:3:"),
            ("workloads: [\n", "inv.yaml"),
        ];
        for (text, expected) in cases {
            let err = load(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            let message = err.to_string();
            assert!(message.starts_with(expected), "{message:?} for {text:?}");
        }
    }
}
