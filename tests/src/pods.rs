//! "Pods" for the identity tests: processes in kubepods-shaped cgroups
//! (as kubelet and containerd make them), each pod in its own network
//! namespace with its pod IP, and a Service ClusterIP made with real
//! nftables DNAT.

use std::{
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
};

use serde_json::json;

use crate::{
    TestCgroup, TestNetns,
    cgroup::cgroup2_mount,
    kube_api::{
        FakeApi, Resource,
        objects::{self, PodSpec},
    },
};

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod UID no other run uses (UUID-shaped).
pub fn pod_uid(seed: &str) -> String {
    crate::kube_api::objects::uid_from(&crate::unique(seed))
}

/// A 64-hex container id no other run uses.
pub fn container_id(seed: &str) -> String {
    let uid = pod_uid(seed).replace('-', "");
    format!("{uid}{uid}")
}

/// The cgroup of one container of a burstable pod, systemd driver with
/// containerd: `/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`. Parents
/// it had to make are removed with it.
pub struct PodCgroup {
    container: Option<TestCgroup>,
    made: Vec<PathBuf>,
}

/// Shared parents (`kubepods.slice`, ...) this process made: whichever pod
/// goes last removes them, in any drop order.
static SHARED_PARENTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

impl PodCgroup {
    pub fn burstable(uid: &str, container: &str) -> Self {
        let (mount, root) = cgroup2_mount();
        let pod = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
        let levels = [
            "kubepods.slice".to_owned(),
            "kubepods-burstable.slice".to_owned(),
            pod,
        ];
        let mut made = Vec::new();
        let mut dir = mount.clone();
        for (depth, level) in levels.iter().enumerate() {
            dir = dir.join(level);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                if depth + 1 < levels.len() {
                    shared_parents().push(dir.clone());
                } else {
                    made.push(dir.clone());
                }
            }
        }
        let relative = format!("{}/cri-containerd-{container}.scope", levels.join("/"));
        Self {
            container: Some(TestCgroup::at(&mount, &root, &relative)),
            made,
        }
    }

    pub fn cgroup(&self) -> &TestCgroup {
        self.container.as_ref().expect("cgroup")
    }
}

fn shared_parents() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    SHARED_PARENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            container.remove();
        }
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        // Deepest first; a parent another pod still uses stays.
        let mut parents = shared_parents();
        while let Some(dir) = parents.last() {
            if fs::remove_dir(dir).is_err() && dir.exists() {
                break;
            }
            parents.pop();
        }
    }
}

/// Two pods' network namespaces on one link: the client (`A`) and the
/// server (`B`), addresses only inside them, and in the client's namespace
/// a ClusterIP that nftables DNATs to the server, as kube-proxy does.
pub struct PodNetwork {
    pub client: TestNetns,
    pub server: TestNetns,
}

impl PodNetwork {
    pub const CLIENT_IP: &str = "10.78.0.2";
    pub const SERVER_IP: &str = "10.78.0.3";
    /// On the link, owned by nobody.
    pub const NOBODY_IP: &str = "10.78.0.200";
    pub const CLUSTER_IP: &str = "10.78.96.10";

    /// `cluster_port` on the ClusterIP goes to `server_port` on the server.
    pub fn new(cluster_port: u16, server_port: u16) -> Self {
        let client = TestNetns::new();
        let server = TestNetns::new();
        let (vc, vs) = (format!("{}c", client.name()), format!("{}s", server.name()));
        run(
            "ip",
            &[
                "link",
                "add",
                &vc,
                "netns",
                client.name(),
                "type",
                "veth",
                "peer",
                "name",
                &vs,
                "netns",
                server.name(),
            ],
            None,
        );
        for (ns, dev, ip) in [
            (&client, &vc, Self::CLIENT_IP),
            (&server, &vs, Self::SERVER_IP),
        ] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        kube_proxy(
            &client,
            &vc,
            &[ClusterIp {
                ip: Self::CLUSTER_IP,
                port: cluster_port,
                backend_ip: Self::SERVER_IP,
                backend_port: server_port,
            }],
        );
        Self { client, server }
    }
}

/// A Service's ClusterIP and the one backend it leads to.
pub struct ClusterIp<'a> {
    pub ip: &'a str,
    pub port: u16,
    pub backend_ip: &'a str,
    pub backend_port: u16,
}

/// What kube-proxy sets up in a pod's view of the network: the service
/// range (`10.78.96.0/24`) routed out of `dev`, and each ClusterIP
/// rewritten to its backend by nftables DNAT on the nat OUTPUT hook. The
/// rules live and die with `ns`.
pub fn kube_proxy(ns: &TestNetns, dev: &str, services: &[ClusterIp<'_>]) {
    ns.ip(&["route", "add", "10.78.96.0/24", "dev", dev]);
    let mut rules = String::from(
        "table ip eastwatch_kube_proxy {\n  chain output {\n    \
         type nat hook output priority -100; policy accept;\n",
    );
    for s in services {
        rules.push_str(&format!(
            "    ip daddr {} tcp dport {} dnat to {}:{}\n",
            s.ip, s.port, s.backend_ip, s.backend_port
        ));
    }
    rules.push_str("  }\n}\n");
    run(
        "ip",
        &["netns", "exec", ns.name(), "nft", "-f", "-"],
        Some(&rules),
    );
}

/// `shop`: Deployments frontend and api (ReplicaSet → Deployment), each
/// with its service account, and Service api with its EndpointSlice, on
/// [`PodNetwork`]'s addresses; `node` holds both pods.
pub fn describe_shop(api: &FakeApi, frontend_uid: &str, api_uid: &str, node: &str) {
    Shop {
        frontend: ShopPod {
            uid: frontend_uid,
            node,
            ip: PodNetwork::CLIENT_IP,
        },
        api: ShopPod {
            uid: api_uid,
            node,
            ip: PodNetwork::SERVER_IP,
        },
        cluster_ip: PodNetwork::CLUSTER_IP,
        labels: &json!({}),
    }
    .describe(api);
    api.apply(Resource::Nodes, objects::node(node, "192.0.2.1"));
}

/// One of `shop`'s pods: its UID, its node and its address.
pub struct ShopPod<'a> {
    pub uid: &'a str,
    pub node: &'a str,
    pub ip: &'a str,
}

/// `shop` wherever a test puts it: Deployments frontend and api
/// (ReplicaSet → Deployment) with their service accounts, their pods
/// labelled `app` and `labels`, and Service api (`cluster_ip`:80 → 8080)
/// with its EndpointSlice. The nodes are the test's to describe.
pub struct Shop<'a> {
    pub frontend: ShopPod<'a>,
    pub api: ShopPod<'a>,
    pub cluster_ip: &'a str,
    /// Labels of both pods besides `app` (a JSON object).
    pub labels: &'a serde_json::Value,
}

impl Shop<'_> {
    pub fn describe(&self, api: &FakeApi) {
        for (name, hash, suffix, pod) in [
            ("frontend", "7d9c8b6f5", "x2k4p", &self.frontend),
            ("api", "5f6d7c8b9", "q8w2e", &self.api),
        ] {
            let mut labels = self.labels.clone();
            labels["app"] = name.into();
            api.apply_deployment_pod(&PodSpec {
                namespace: "shop",
                deployment: name,
                hash,
                suffix,
                uid: pod.uid,
                node: pod.node,
                ip: pod.ip,
                service_account: name,
                labels: &labels,
            });
        }
        api.apply(
            Resource::Services,
            objects::service(
                "shop",
                "api",
                self.cluster_ip,
                80,
                8080,
                &json!({"app": "api"}),
            ),
        );
        api.apply(
            Resource::EndpointSlices,
            objects::endpoint_slice(
                "shop",
                "api",
                "7xk2p",
                8080,
                &[("api-5f6d7c8b9-q8w2e", self.api.ip, self.api.node)],
            ),
        );
    }
}
