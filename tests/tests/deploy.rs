//! The deployment in deploy/: every manifest parses into its Kubernetes
//! type (k8s-openapi) and says exactly what the YAML says (a misspelt field
//! would be dropped by the types, so each is compared after a round trip);
//! the DaemonSet holds least privilege; RBAC is read-only; the ConfigMaps
//! hold a config and a baseline the agent accepts.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use eastwatch_tests::{TempDir, agent::agent_binary};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn kustomize_dir() -> PathBuf {
    deploy_dir().join("kustomize")
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses into `T` and checks nothing was lost on the way.
fn typed<T: DeserializeOwned + Serialize>(path: &Path) -> T {
    let raw = yaml(path);
    let parsed: T = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid object: {e}", path.display()));
    let back = serde_json::to_value(&parsed).expect("serialize");
    assert_eq!(
        back,
        raw,
        "{}: fields the Kubernetes types do not know (misspelt?)",
        path.display()
    );
    parsed
}

fn resources() -> Vec<PathBuf> {
    let kustomization = yaml(&kustomize_dir().join("kustomization.yaml"));
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| kustomize_dir().join(r.as_str().expect("resource path")))
        .collect()
}

fn daemonset() -> DaemonSet {
    typed(&kustomize_dir().join("daemonset.yaml"))
}

fn agent_container(ds: &DaemonSet) -> Container {
    let pod = ds.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let listed: BTreeSet<PathBuf> = resources().into_iter().collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(kustomize_dir())
        .expect("deploy/kustomize")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    assert_eq!(listed, on_disk, "kustomization lists every manifest");
    let mut kinds = BTreeSet::new();
    for path in &listed {
        let kind = yaml(path)["kind"].as_str().expect("kind").to_owned();
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(path)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(path)),
            "ClusterRole" => drop(typed::<ClusterRole>(path)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(path)),
            "ConfigMap" => drop(typed::<ConfigMap>(path)),
            "DaemonSet" => drop(typed::<DaemonSet>(path)),
            other => panic!("{}: unexpected kind {other}", path.display()),
        }
        kinds.insert(kind);
    }
    assert_eq!(
        kinds,
        BTreeSet::from(
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "DaemonSet"
            ]
            .map(String::from)
        )
    );
}

#[test]
fn the_daemonset_holds_least_privilege() {
    let ds = daemonset();
    let pod = ds.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.host_network, Some(false), "no host network");
    assert_eq!(pod.host_pid, Some(true), "host /proc (docs/deploy.md)");
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("eastwatch"));

    let container = agent_container(&ds);
    let security = container.security_context.clone().expect("securityContext");
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".to_owned())
    );
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
    let added: BTreeSet<String> = capabilities.add.unwrap_or_default().into_iter().collect();
    assert_eq!(
        added,
        BTreeSet::from(
            [
                "BPF",
                "PERFMON",
                "NET_ADMIN",
                "SYS_ADMIN",
                "SYS_PTRACE",
                "DAC_READ_SEARCH"
            ]
            .map(String::from)
        ),
        "exactly the capabilities docs/deploy.md justifies"
    );

    let resources = container.resources.clone().expect("resources");
    for (what, map) in [
        ("requests", resources.requests),
        ("limits", resources.limits),
    ] {
        let map = map.unwrap_or_else(|| panic!("no {what}"));
        assert!(
            map.contains_key("cpu") && map.contains_key("memory"),
            "{what}: {map:?}"
        );
    }

    // The node name from the downward API.
    let env = container.env.clone().unwrap_or_default();
    let node = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(node.as_deref(), Some("spec.nodeName"));
}

#[test]
fn probes_ask_the_loopback_health_endpoint() {
    let container = agent_container(&daemonset());
    let args = container.args.clone().unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| a == "--health-listen")
        .and_then(|i| args.get(i + 1))
        .expect("--health-listen");
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    assert!(addr.ip().is_loopback(), "{addr}");
    for (name, probe, path) in [
        ("liveness", container.liveness_probe.clone(), "/healthz"),
        ("readiness", container.readiness_probe.clone(), "/readyz"),
        ("startup", container.startup_probe.clone(), "/readyz"),
    ] {
        let probe = probe.unwrap_or_else(|| panic!("no {name} probe"));
        let command = probe
            .exec
            .and_then(|e| e.command)
            .unwrap_or_else(|| panic!("{name}: exec probe"));
        assert_eq!(
            command,
            vec![
                "/usr/local/bin/eastwatch".to_owned(),
                "probe".into(),
                "--url".into(),
                format!("http://{addr}{path}")
            ],
            "{name}"
        );
    }
    // The binary the probes run is the one the image installs.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("COPY --from=build /out/eastwatch /usr/local/bin/eastwatch"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/eastwatch\"]"));
    assert!(dockerfile.contains("RUN cargo xtask build"));
}

#[test]
fn the_host_is_mounted_read_only_where_it_can_be() {
    let ds = daemonset();
    let pod = ds.spec.template.spec.clone().expect("pod spec");
    let volumes = pod.volumes.unwrap_or_default();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
    };
    assert_eq!(host_path("cgroup2").as_deref(), Some("/sys/fs/cgroup"));
    assert_eq!(host_path("btf").as_deref(), Some("/sys/kernel/btf"));
    assert_eq!(host_path("bpffs").as_deref(), Some("/sys/fs/bpf"));
    assert!(
        volumes
            .iter()
            .filter_map(|v| v.host_path.as_ref())
            .all(|h| h.path != "/" && h.path != "/proc" && !h.path.starts_with("/etc")),
        "no host root, /proc or /etc"
    );
    let mounts = agent_container(&ds).volume_mounts.unwrap_or_default();
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("mount {name}"))
            .clone()
    };
    for read_only in ["cgroup2", "btf", "config", "baseline"] {
        assert_eq!(mount(read_only).read_only, Some(true), "{read_only}");
    }
    // ConfigMaps as directories: a subPath mount never sees updates.
    for config in ["config", "baseline"] {
        assert_eq!(mount(config).sub_path, None, "{config}");
        assert!(
            volumes
                .iter()
                .any(|v| v.name == config && v.config_map.is_some())
        );
    }
    // Everything the agent writes is under the state volume.
    let container = agent_container(&ds);
    let args = container.args.unwrap_or_default();
    let spool = args
        .iter()
        .position(|a| a == "--spool-dir")
        .and_then(|i| args.get(i + 1))
        .expect("--spool-dir");
    assert!(spool.starts_with(&mount("state").mount_path), "{spool}");
}

#[test]
fn rbac_is_read_only_and_minimal() {
    let role: ClusterRole = typed(&kustomize_dir().join("clusterrole.yaml"));
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        ["get", "list", "watch"].contains(&verb.as_str()),
                        "read-only: {verb}"
                    );
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
        assert_eq!(rule.resource_names, None);
        assert_eq!(rule.non_resource_urls, None);
    }
    let expected: BTreeSet<String> = [
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/services:get",
        "/services:list",
        "/services:watch",
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        "discovery.k8s.io/endpointslices:get",
        "discovery.k8s.io/endpointslices:list",
        "discovery.k8s.io/endpointslices:watch",
        "apps/replicasets:get",
        "batch/jobs:get",
    ]
    .map(String::from)
    .into();
    assert_eq!(granted, expected);

    let binding: ClusterRoleBinding = typed(&kustomize_dir().join("clusterrolebinding.yaml"));
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "eastwatch");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "eastwatch");
    assert_eq!(subjects[0].namespace.as_deref(), Some("eastwatch"));
}

#[test]
fn the_configmaps_hold_what_the_agent_accepts() {
    let ds = daemonset();
    let mounts = agent_container(&ds).volume_mounts.unwrap_or_default();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m.name == volume)
            .map(|m| m.mount_path.clone())
            .expect("mount")
    };
    let baseline: ConfigMap = typed(&kustomize_dir().join("configmap-baseline.yaml"));
    let config: ConfigMap = typed(&kustomize_dir().join("configmap-config.yaml"));
    let baseline_text = baseline
        .data
        .as_ref()
        .and_then(|d| d.get("baseline.yaml"))
        .expect("baseline.yaml")
        .clone();
    let config_text = config
        .data
        .as_ref()
        .and_then(|d| d.get("agent.yaml"))
        .expect("agent.yaml")
        .clone();
    // The DaemonSet runs the config where the ConfigMap lands.
    let args = agent_container(&ds).args.unwrap_or_default();
    assert!(args.contains(&format!("{}/agent.yaml", mount_of("config"))));
    let config_yaml: Value = serde_saphyr::from_str(&config_text).expect("agent.yaml");
    assert_eq!(
        config_yaml["spec"]["baseline"].as_str(),
        Some(format!("{}/baseline.yaml", mount_of("baseline")).as_str())
    );

    // The real binary accepts the baseline.
    let dir = TempDir::new("deploy");
    let baseline_path = dir.join("baseline.yaml");
    std::fs::write(&baseline_path, &baseline_text).expect("write");
    let lint = Command::new(agent_binary())
        .args(["baseline", "lint", "--deny-warnings"])
        .arg(&baseline_path)
        .output()
        .expect("eastwatch baseline lint");
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}
