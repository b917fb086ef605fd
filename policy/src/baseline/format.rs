//! The baseline file, version 1: serde types in a Kubernetes-style
//! envelope. These types are what is read, written and described by the
//! JSON Schema; [`super::validate`] turns them into checked rules.
//!
//! ```yaml
//! apiVersion: eastwatch.io/v1
//! kind: Baseline
//! metadata:
//!   name: shop
//! spec:
//!   edges:
//!     - from: {namespace: shop, workload: {kind: Deployment, name: web}}
//!       to: {namespace: shop, workload: {kind: Deployment, name: api}}
//!       ports: ["8080/tcp"]
//! ```

use std::{borrow::Cow, cmp::Ordering, collections::BTreeMap, fmt, hash::Hash};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const API_VERSION: &str = "eastwatch.io/v1";
pub const KIND: &str = "Baseline";

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value with the place in the file it came from (when read from one).
/// Equality, ordering and hashing look at the value only; serialization and
/// the schema are those of the value.
#[derive(Debug, Clone, Default)]
pub struct Located<T> {
    pub value: T,
    pub at: Option<Pos>,
}

impl<T> Located<T> {
    pub fn new(value: T) -> Self {
        Self { value, at: None }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Located<T> {}
impl<T: PartialOrd> PartialOrd for Located<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for Located<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}
impl<T: Hash> Hash for Located<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state)
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let (line, column) = (spanned.referenced.line(), spanned.referenced.column());
        Ok(Self {
            value: spanned.value,
            at: (line > 0).then_some(Pos { line, column }),
        })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A baseline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "eastwatch Baseline v1")]
pub struct BaselineDoc {
    /// Always `eastwatch.io/v1`.
    pub api_version: Located<String>,
    /// Always `Baseline`.
    pub kind: Located<String>,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: Located<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// The allowed lateral paths. Everything else is unauthorized.
    #[serde(default)]
    pub edges: Vec<Located<Edge>>,
}

/// One allowed path: clients matching `from` may open connections (or send
/// datagrams) to servers matching `to` on `ports`. One edge covers both
/// observations of a connection: the client's egress and the server's
/// ingress.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    /// The client: who connected or sent first.
    pub from: Located<Selector>,
    /// The server.
    pub to: Located<Selector>,
    /// The server's service ports: `5432/tcp`, `8000-8080/tcp`, `53/udp`,
    /// or `*/tcp` for every port (a spelled-out wildcard).
    pub ports: Located<Vec<Located<String>>>,
    /// Why this path exists (for reviewers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who answers for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the approval lapses: RFC 3339 date-time or date (UTC midnight).
    /// After that the edge no longer allows anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Located<String>>,
}

/// Which ends an edge applies to. Every field given must match (AND). An
/// empty selector is an error: every peer is spelled `any: true`.
///
/// Workload fields (`namespace`, `workload`, `serviceAccount`, `labels`,
/// `spiffeId`) match Kubernetes (or inventory) workloads and need a
/// `namespace` (`"*"` for all) unless `spiffeId` names it. Host fields
/// (`cgroup`, `systemd`, `container`, `node`) match host identities. `cidr`
/// matches peers outside the cluster by address.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// `true`: every peer. Only as the whole selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    /// A namespace, or `"*"` for every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSelector>,
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// A cgroup v2 path, or a subtree spelled `/path/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// A systemd unit, e.g. `nginx.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<String>,
    /// A container outside Kubernetes: `<runtime>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A node of the cluster (its host network), or `"*"` for every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Peers outside the cluster: an IPv4 or IPv6 network (`10.0.0.0/8`,
    /// `2001:db8::/32`) or a single address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, ...; absent: any kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The workload's name, or `"*"`.
    pub name: String,
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every
/// expression must hold.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl BaselineDoc {
    /// An empty baseline named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            api_version: Located::new(API_VERSION.into()),
            kind: Located::new(KIND.into()),
            metadata: Metadata {
                name: Located::new(name.into()),
                ..Metadata::default()
            },
            spec: Spec::default(),
        }
    }

    /// The YAML text of the baseline, as every command writes it.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }
}

/// The JSON Schema of baseline files, pretty-printed (what
/// `docs/baseline.schema.json` holds).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(BaselineDoc);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
