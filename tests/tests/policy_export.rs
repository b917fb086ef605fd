//! `eastwatch baseline export` on the demo's baseline (`tests/fixtures/
//! demo/`, what the demo learns), with pod labels and Services read over
//! the real kube-rs client from an API server describing the demo's shop.
//! Every exported policy parses into the Kubernetes types (k8s-openapi) or
//! into CiliumNetworkPolicy types written here after Cilium's published
//! `cilium.io/v2` CRD schema, and this file's own reading of their
//! semantics admits exactly what the baseline allows: the db only the api
//! on 5432/tcp, the api only the frontend on 8080/tcp (Service api's
//! targetPort; port 80 is what the frontend dials). `--check` names each
//! flow the demo's attack alerts and says what it would take to allow it.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output},
};

use eastwatch_tests::{
    TempDir,
    agent::agent_binary,
    kube_api::FakeApi,
    pods::pod_uid,
    shop::{self, TIERS, arg, fixture},
};
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The demo's shop, described by an API server for kube-rs.
struct Cluster {
    _api: FakeApi,
    _dir: TempDir,
    kubeconfig: PathBuf,
}

fn shop_cluster() -> Cluster {
    let api = FakeApi::start();
    let uids: Vec<String> = TIERS.iter().map(|t| pod_uid(t.name)).collect();
    shop::describe(&api, &uids);
    let dir = TempDir::new("export");
    let kubeconfig = api.write_kubeconfig(dir.path(), "demo");
    Cluster {
        _api: api,
        _dir: dir,
        kubeconfig,
    }
}

fn eastwatch(args: &[&str]) -> Output {
    Command::new(agent_binary())
        .args(args)
        .output()
        .expect("run eastwatch")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `baseline export` of the demo's baseline against the shop's API.
fn export(cluster: &Cluster, extra: &[&str]) -> Output {
    let baseline = fixture("shop-baseline.yaml");
    let mut args = vec![
        "baseline",
        "export",
        arg(&baseline),
        "--kubeconfig",
        arg(&cluster.kubeconfig),
    ];
    args.extend_from_slice(extra);
    eastwatch(&args)
}

/// Each document of a YAML stream, parsed into `T` with nothing lost (a
/// field `T` does not know would be dropped, so each is compared after a
/// round trip).
fn documents<T: DeserializeOwned + Serialize>(stream: &str) -> Vec<T> {
    let raw: Vec<Value> = serde_saphyr::from_multiple(stream).expect("a YAML stream");
    raw.into_iter()
        .map(|doc| {
            let typed: T = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("not a valid object: {e}\n{doc:#}"));
            let back = serde_json::to_value(&typed).expect("serialize");
            assert_eq!(back, doc, "fields the types do not know");
            typed
        })
        .collect()
}

// ---- Kubernetes NetworkPolicy semantics, read from the API types ----

type Labels = BTreeMap<String, String>;

/// A pod of the shop: namespace labels (as the API server sets them) and
/// pod labels.
struct Pod {
    name: &'static str,
    namespace: Labels,
    labels: Labels,
}

fn shop_pods() -> Vec<Pod> {
    TIERS
        .iter()
        .enumerate()
        .map(|(i, tier)| Pod {
            name: tier.name,
            namespace: Labels::from([("kubernetes.io/metadata.name".into(), "shop".into())]),
            labels: serde_json::from_value(shop::labels(i)).expect("labels"),
        })
        .collect()
}

fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|r| {
        let have = labels.get(&r.key);
        let values = r.values.clone().unwrap_or_default();
        match r.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("operator {other}"),
        }
    });
    exact && expressions
}

fn peer_admits(peer: &NetworkPolicyPeer, from: &Pod) -> bool {
    assert!(peer.ip_block.is_none(), "no address peers for the shop");
    let namespace = peer
        .namespace_selector
        .as_ref()
        .expect("a peer outside the policy's namespace needs a namespaceSelector");
    selects(namespace, &from.namespace)
        && peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| selects(s, &from.labels))
}

fn port_admits(port: &NetworkPolicyPort, number: i32, protocol: &str) -> bool {
    port.protocol.as_deref().unwrap_or("TCP") == protocol
        && match (&port.port, port.end_port) {
            (None, _) => true,
            (Some(IntOrString::Int(first)), Some(last)) => (*first..=last).contains(&number),
            (Some(IntOrString::Int(first)), None) => *first == number,
            (Some(IntOrString::String(name)), _) => panic!("named port {name}: the shop has none"),
        }
}

/// Whether `policy` (in namespace shop) admits `from` to `to` on a port.
fn admits(policy: &NetworkPolicy, from: &Pod, to: &Pod, port: i32, protocol: &str) -> bool {
    let spec = policy.spec.as_ref().expect("spec");
    assert!(
        spec.pod_selector
            .as_ref()
            .is_none_or(|s| selects(s, &to.labels)),
        "does not select {}",
        to.name
    );
    spec.ingress.iter().flatten().any(|rule| {
        let from_ok = match &rule.from {
            None => true,
            Some(peers) => peers.iter().any(|p| peer_admits(p, from)),
        };
        let port_ok = match &rule.ports {
            None => true,
            Some(ports) => ports.iter().any(|p| port_admits(p, port, protocol)),
        };
        from_ok && port_ok
    })
}

const PROBES: [(i32, &str); 8] = [
    (80, "TCP"),
    (8080, "TCP"),
    (5432, "TCP"),
    (22, "TCP"),
    (9999, "UDP"),
    (5432, "UDP"),
    (8080, "UDP"),
    (53, "UDP"),
];

/// Which (client, port, protocol) of the shop a policy for `server` admits.
fn admitted_by(policy: &NetworkPolicy, server: &str) -> Vec<(String, i32, String)> {
    let pods = shop_pods();
    let to = pods.iter().find(|p| p.name == server).expect("server pod");
    let mut admitted = Vec::new();
    for from in &pods {
        for (port, protocol) in PROBES {
            if admits(policy, from, to, port, protocol) {
                admitted.push((from.name.to_owned(), port, protocol.to_owned()));
            }
        }
    }
    admitted
}

fn policy<'a>(policies: &'a [NetworkPolicy], name: &str) -> &'a NetworkPolicy {
    policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no policy {name}"))
}

#[test]
fn demo_baseline_exports_networkpolicies_that_admit_exactly_its_edges() {
    let cluster = shop_cluster();
    let out = export(&cluster, &["--format", "networkpolicy"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pod labels from the cluster"),
        "labels come from the API: {stderr}"
    );
    assert!(
        !stderr.contains("warning:"),
        "nothing to warn about: {stderr}"
    );
    let policies: Vec<NetworkPolicy> = documents(&stdout);
    let names: Vec<&str> = policies
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "eastwatch-deployment-api-ingress",
            "eastwatch-deployment-db-ingress"
        ]
    );
    for p in &policies {
        assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
        assert!(p.metadata.labels.as_ref().is_some_and(|l| {
            l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some("eastwatch")
        }));
    }
    assert_eq!(
        admitted_by(policy(&policies, "eastwatch-deployment-db-ingress"), "db"),
        [("api".to_owned(), 5432, "TCP".to_owned())],
        "the db admits only the api on 5432/tcp"
    );
    assert_eq!(
        admitted_by(policy(&policies, "eastwatch-deployment-api-ingress"), "api"),
        [("frontend".to_owned(), 8080, "TCP".to_owned())],
        "the api admits only the frontend, on the Service's targetPort 8080 (not 80)"
    );
    // The stream names, above each policy, the baseline edges behind it.
    assert!(stdout.contains("#   from edges[1] (line"), "{stdout}");
}

// ---- CiliumNetworkPolicy, after Cilium's cilium.io/v2 CRD schema ----

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CiliumNetworkPolicy {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: CiliumRule,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CiliumRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint_selector: Option<EndpointSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_selector: Option<EndpointSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress: Option<Vec<IngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress_deny: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    egress: Option<Vec<EgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    egress_deny: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enable_default_deny: Option<DefaultDeny>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DefaultDeny {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    egress: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_expressions: Option<Vec<Requirement>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Requirement {
    key: String,
    operator: Operator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Entity {
    All,
    World,
    Cluster,
    Host,
    Init,
    Ingress,
    Unmanaged,
    RemoteNode,
    Health,
    None,
    KubeApiserver,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(default, rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    from_cidr: Option<Vec<String>>,
    #[serde(
        default,
        rename = "fromCIDRSet",
        skip_serializing_if = "Option::is_none"
    )]
    from_cidr_set: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_entities: Option<Vec<Entity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_nodes: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_ports: Option<Vec<PortRule>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    to_cidr: Option<Vec<String>>,
    #[serde(default, rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    to_cidr_set: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_entities: Option<Vec<Entity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_nodes: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_ports: Option<Vec<PortRule>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PortRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<PortProtocol>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rules: Option<Value>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PortProtocol {
    port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
    #[serde(rename = "VRRP")]
    Vrrp,
    #[serde(rename = "IGMP")]
    Igmp,
    #[serde(rename = "ANY")]
    Any,
}

/// The schema's constraints serde cannot state: one of endpointSelector
/// and nodeSelector, at least one rule list, at most 40 ports a rule, and
/// the port pattern (a number up to 65535, or a port name).
fn check_schema(p: &CiliumNetworkPolicy) {
    assert_eq!(p.api_version, "cilium.io/v2");
    assert_eq!(p.kind, "CiliumNetworkPolicy");
    let s = &p.spec;
    assert!(s.endpoint_selector.is_some() != s.node_selector.is_some());
    assert!(
        s.ingress.is_some()
            || s.ingress_deny.is_some()
            || s.egress.is_some()
            || s.egress_deny.is_some()
    );
    let rules = s
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.to_ports.iter().flatten())
        .chain(
            s.egress
                .iter()
                .flatten()
                .flat_map(|r| r.to_ports.iter().flatten()),
        );
    for rule in rules {
        let ports = rule.ports.as_deref().unwrap_or_default();
        assert!(ports.len() <= 40, "maxItems 40");
        for port in ports {
            let numeric = port.port.parse::<u32>().is_ok_and(|n| n <= 65535);
            let named = !port.port.is_empty()
                && port
                    .port
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && port.port.chars().any(|c| c.is_ascii_alphabetic())
                && !port.port.starts_with('-')
                && !port.port.ends_with('-')
                && !port.port.contains("--");
            assert!(
                numeric || named,
                "port {:?} breaks the schema's pattern",
                port.port
            );
            assert!(port.end_port.is_none_or(|e| (0..=65535).contains(&e)));
        }
    }
}

/// An endpoint's labels as Cilium sees a pod: its own, its namespace's.
fn endpoint(pod: &Pod) -> Labels {
    let mut labels = pod.labels.clone();
    labels.insert(
        "io.kubernetes.pod.namespace".into(),
        pod.namespace["kubernetes.io/metadata.name"].clone(),
    );
    labels
}

/// Cilium's selector keys may carry a source (`k8s:`, `any:`).
fn cilium_selects(selector: &EndpointSelector, labels: &Labels) -> bool {
    let key = |k: &str| {
        k.strip_prefix("k8s:")
            .or_else(|| k.strip_prefix("any:"))
            .unwrap_or(k)
            .to_owned()
    };
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(&key(k)) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|r| {
        let have = labels.get(&key(&r.key));
        let values = r.values.clone().unwrap_or_default();
        match r.operator {
            Operator::In => have.is_some_and(|v| values.contains(v)),
            Operator::NotIn => have.is_none_or(|v| !values.contains(v)),
            Operator::Exists => have.is_some(),
            Operator::DoesNotExist => have.is_none(),
        }
    });
    exact && expressions
}

fn cilium_admits(p: &CiliumNetworkPolicy, from: &Pod, to: &Pod, port: i32, protocol: &str) -> bool {
    let subject = p.spec.endpoint_selector.as_ref().expect("endpointSelector");
    assert!(
        cilium_selects(subject, &to.labels),
        "does not select {}",
        to.name
    );
    p.spec.ingress.iter().flatten().any(|rule| {
        assert!(
            rule.from_cidr.is_none() && rule.from_entities.is_none(),
            "pods only"
        );
        // In a namespaced policy a selector without a namespace label
        // means the policy's own namespace.
        let from_ok = rule.from_endpoints.iter().flatten().any(|s| {
            let mut s = s.clone();
            let labels = s.match_labels.get_or_insert_default();
            let mentions_namespace = labels
                .keys()
                .any(|k| k.ends_with("io.kubernetes.pod.namespace"));
            if !mentions_namespace {
                labels.insert("io.kubernetes.pod.namespace".into(), "shop".into());
            }
            cilium_selects(&s, &endpoint(from))
        });
        let port_ok = rule.to_ports.iter().flatten().any(|r| {
            r.ports.iter().flatten().any(|p| {
                let proto = match p.protocol.unwrap_or(Protocol::Any) {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                    Protocol::Any => protocol,
                    other => panic!("{other:?}"),
                };
                let first: i32 = p.port.parse().expect("numbered port");
                let last = p.end_port.unwrap_or(first);
                proto == protocol && (first == 0 || (first..=last).contains(&port))
            })
        });
        from_ok && port_ok
    })
}

#[test]
fn demo_baseline_exports_ciliumnetworkpolicies_after_the_crd_schema() {
    let cluster = shop_cluster();
    let out = export(&cluster, &["--format", "ciliumnetworkpolicy"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let policies: Vec<CiliumNetworkPolicy> = documents(&stdout);
    assert_eq!(policies.len(), 2);
    for p in &policies {
        check_schema(p);
        assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
    }
    let by_name = |name: &str| {
        policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let pods = shop_pods();
    for (name, server, expected) in [
        ("eastwatch-deployment-db-ingress", "db", ("api", 5432)),
        (
            "eastwatch-deployment-api-ingress",
            "api",
            ("frontend", 8080),
        ),
    ] {
        let to = pods.iter().find(|p| p.name == server).expect("pod");
        let mut admitted = Vec::new();
        for from in &pods {
            for (port, protocol) in PROBES {
                if cilium_admits(by_name(name), from, to, port, protocol) {
                    admitted.push((from.name, port, protocol));
                }
            }
        }
        assert_eq!(admitted, [(expected.0, expected.1, "TCP")], "{name}");
    }
}

// ---- --check ----

/// Every (client, server, port/transport) the alerts name: each alert's
/// own flow and each scan target.
fn alerted_flows() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("shop-alerts.jsonl")).expect("alerts");
    let mut flows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let alert: Value = serde_json::from_str(line).expect("an alert line");
        if alert["event"] != "eastwatch.alert.unauthorized_flow" {
            continue;
        }
        let from = alert["source"]["identity"]["name"]
            .as_str()
            .expect("source");
        let port = alert["flow"]["destination"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .expect("port");
        let transport = alert["flow"]["transport"].as_str().expect("transport");
        let to = alert["destination"]["identity"]["name"]
            .as_str()
            .expect("destination");
        flows.push(format!(
            "workload:shop/deployment/{from} -> workload:shop/deployment/{to} {port}/{transport}"
        ));
        if let Some(targets) = alert["details"]["targets"].as_str() {
            for target in targets.split(", ") {
                let (identity, port) = target.rsplit_once(' ').expect("target");
                flows.push(format!(
                    "workload:shop/deployment/{from} -> {identity} {port}"
                ));
            }
        }
    }
    flows.sort();
    flows.dedup();
    flows
}

#[test]
fn check_of_the_demo_attack_names_every_blocked_flow_and_what_to_change() {
    let cluster = shop_cluster();
    let alerts = fixture("shop-alerts.jsonl");
    let out = export(
        &cluster,
        &["--format", "networkpolicy", "--check", arg(&alerts)],
    );
    let report = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "blocked flows fail the check:\n{report}"
    );
    let expected = alerted_flows();
    assert!(
        expected.iter().any(|f| f.ends_with("db 5432/tcp"))
            && expected.iter().any(|f| f.ends_with("api 9999/udp"))
            && expected.len() >= 5,
        "the fixture holds the demo's attack: {expected:?}"
    );
    for flow in &expected {
        let line = format!("BLOCKED      {flow}");
        assert!(report.contains(&line), "{line:?} missing from\n{report}");
    }
    assert!(
        report.contains(&format!(
            "{} flows: 0 admitted, {} blocked, 0 undetermined",
            expected.len(),
            expected.len()
        )),
        "{report}"
    );
    assert!(
        report.contains("blocked by: NetworkPolicy shop/eastwatch-deployment-db-ingress (ingress of workload:shop/deployment/db; admits workload:shop/deployment/api on 5432/tcp)"),
        "{report}"
    );
    assert!(
        report.contains("to change:  the baseline: no edge allows this path"),
        "{report}"
    );

    // The same as JSON, one result per flow.
    let json = export(
        &cluster,
        &[
            "--format",
            "ciliumnetworkpolicy",
            "--check",
            arg(&alerts),
            "--check-format",
            "json",
        ],
    );
    let parsed: Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(parsed["blocked"], expected.len());
    for result in parsed["results"].as_array().expect("results") {
        assert_eq!(result["verdict"], "blocked");
        assert!(
            result["blocked_by"][0]
                .as_str()
                .is_some_and(|b| b.starts_with("CiliumNetworkPolicy shop/")),
            "{result}"
        );
    }
}

#[test]
fn check_of_the_learned_evidence_admits_every_flow() {
    let cluster = shop_cluster();
    let evidence = fixture("shop-evidence.json");
    for format in ["networkpolicy", "ciliumnetworkpolicy"] {
        let out = export(&cluster, &["--format", format, "--check", arg(&evidence)]);
        let report = text(&out.stdout);
        assert!(out.status.success(), "{report}{}", text(&out.stderr));
        // frontend → api on 8080 (dialled through its Service on 80: one
        // connection, one edge on the server's port), api → db on 5432.
        assert!(
            report.contains("2 flows: 2 admitted, 0 blocked, 0 undetermined"),
            "{report}"
        );
        assert!(
            report.contains("admitted     workload:shop/deployment/frontend -> workload:shop/deployment/api 8080/tcp"),
            "{report}"
        );
    }
}

#[test]
fn labels_from_evidence_alone_are_used_and_the_missing_services_said() {
    let evidence = fixture("shop-evidence.json");
    let baseline = fixture("shop-baseline.yaml");
    let out = eastwatch(&[
        "baseline",
        "export",
        arg(&baseline),
        "--format",
        "networkpolicy",
        "--no-kubernetes",
        "--evidence",
        arg(&evidence),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pod labels from evidence"), "{stderr}");
    assert!(
        stderr.contains("warning: Services are unknown"),
        "without Services the ports stay as learned, and it says so: {stderr}"
    );
    let policies: Vec<NetworkPolicy> = documents(&stdout);
    assert_eq!(policies.len(), 2);
    let db = admitted_by(policy(&policies, "eastwatch-deployment-db-ingress"), "db");
    assert_eq!(db, [("api".to_owned(), 5432, "TCP".to_owned())]);
    let api = admitted_by(policy(&policies, "eastwatch-deployment-api-ingress"), "api");
    assert_eq!(
        api,
        [("frontend".to_owned(), 8080, "TCP".to_owned())],
        "the baseline's ports, as learned"
    );
}

#[test]
fn without_labels_nothing_is_widened() {
    let baseline = fixture("shop-baseline.yaml");
    let out = eastwatch(&[
        "baseline",
        "export",
        arg(&baseline),
        "--format",
        "networkpolicy",
        "--no-kubernetes",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "", "no policy without the pods' labels");
    for edge in ["edges[0]", "edges[1]"] {
        let warned = stderr.lines().any(|l| {
            l.contains("warning:")
                && l.contains(edge)
                && l.contains("not exported")
                && l.contains("pod labels")
        });
        assert!(warned, "{edge} is warned about:\n{stderr}");
    }
}

#[test]
fn an_unreachable_cluster_is_an_error_not_an_empty_export() {
    let dir = TempDir::new("export-down");
    let api = FakeApi::start();
    let kubeconfig = api.write_kubeconfig(dir.path(), "demo");
    api.set_down(true);
    let baseline = fixture("shop-baseline.yaml");
    let out = eastwatch(&[
        "baseline",
        "export",
        arg(&baseline),
        "--format",
        "networkpolicy",
        "--kubeconfig",
        arg(&kubeconfig),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("listing pods"), "{stderr}");
}
