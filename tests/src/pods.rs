//! "Pods" for the identity tests: processes in kubepods-shaped cgroups
//! (as kubelet and containerd make them), each pod in its own network
//! namespace with its pod IP, and a Service ClusterIP made with real
//! nftables DNAT.

use std::{
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use crate::{TestCgroup, TestNetns, cgroup::cgroup2_mount};

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
        for level in &levels {
            dir = dir.join(level);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                made.push(dir.clone());
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

impl Drop for PodCgroup {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            container.remove();
        }
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
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
        // Service addresses route out of the pod and are rewritten on the
        // way (kube-proxy's nat OUTPUT rule, in nftables).
        client.ip(&["route", "add", "10.78.96.0/24", "dev", &vc]);
        let rules = format!(
            "table ip eastwatch_kube_proxy {{\n\
               chain output {{\n\
                 type nat hook output priority -100; policy accept;\n\
                 ip daddr {} tcp dport {cluster_port} dnat to {}:{server_port}\n\
               }}\n\
             }}\n",
            Self::CLUSTER_IP,
            Self::SERVER_IP
        );
        run(
            "ip",
            &["netns", "exec", client.name(), "nft", "-f", "-"],
            Some(&rules),
        );
        Self { client, server }
    }
}
