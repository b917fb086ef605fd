//! What a cgroup v2 path says about its owner, without asking anyone: a
//! Kubernetes pod (and container), a container outside Kubernetes, a
//! systemd unit, or nothing.
//!
//! Kubelet names pod cgroups after the pod UID and QoS class; container
//! runtimes name theirs after the container id:
//!
//! | driver | form |
//! |---|---|
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` |
//! | systemd, guaranteed | `/kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope` |
//! | cgroupfs | `/kubepods/besteffort/pod<uid>/<id>` |
//!
//! The pod part may sit anywhere in the path (kind and other nested nodes
//! put `kubelet.slice` or a whole node container above it), and a container
//! may make sub-cgroups of its own below its scope.

use eastwatch_policy::identity::ContainerRuntime;

/// Kubernetes QoS classes, as kubelet encodes them in the pod's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A container id found in a path; the runtime is unknown for the bare
/// ids of the cgroupfs driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    pub runtime: Option<ContainerRuntime>,
    pub id: String,
}

/// A container outside Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostContainer {
    pub runtime: ContainerRuntime,
    pub id: String,
}

/// The owner a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CgroupOwner {
    /// A pod's cgroup or one of its containers' (no container: the pod
    /// cgroup itself, where kubelet and some runtimes put helpers).
    Pod {
        uid: String,
        qos: QosClass,
        container: Option<ContainerId>,
    },
    Container(HostContainer),
    /// The deepest systemd unit (`.service` or `.scope`) on the path.
    SystemdUnit(String),
    /// None of the above: the path itself is all there is.
    Other,
}

/// Parses a path from the root of the cgroup v2 hierarchy.
pub fn parse(path: &str) -> CgroupOwner {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if let Some(pod) = find_pod(&components) {
        return pod;
    }
    // Outside Kubernetes: the deepest container wins (a container may run
    // systemd units of its own, which are still that container's).
    let mut unit = None;
    for (i, component) in components.iter().enumerate() {
        if let Some(container) = host_container(&components[..i], component) {
            return CgroupOwner::Container(container);
        }
        if is_unit(component) {
            unit = Some(*component);
        }
    }
    match unit {
        Some(unit) => CgroupOwner::SystemdUnit(unit.to_owned()),
        None => CgroupOwner::Other,
    }
}

fn is_unit(component: &str) -> bool {
    component.ends_with(".service") || component.ends_with(".scope")
}

/// The pod component (and the container below it), wherever it sits.
fn find_pod(components: &[&str]) -> Option<CgroupOwner> {
    for (i, component) in components.iter().enumerate() {
        let found = systemd_pod(component).or_else(|| {
            let parent = i.checked_sub(1).map(|p| components[p]);
            cgroupfs_pod(components[..i].iter().rev().copied(), parent, component)
        });
        if let Some((uid, qos)) = found {
            let container = components.get(i + 1).and_then(|c| container_id(c));
            return Some(CgroupOwner::Pod {
                uid,
                qos,
                container,
            });
        }
    }
    None
}

/// `kubepods-pod<uid>.slice`, `kubepods-burstable-pod<uid>.slice`,
/// `kubelet-kubepods-besteffort-pod<uid>.slice`; systemd writes the UID's
/// dashes as underscores.
fn systemd_pod(component: &str) -> Option<(String, QosClass)> {
    let stem = component.strip_suffix(".slice")?;
    let (prefix, uid) = stem.rsplit_once("-pod")?;
    let qos = if prefix.ends_with("kubepods-burstable") {
        QosClass::Burstable
    } else if prefix.ends_with("kubepods-besteffort") {
        QosClass::BestEffort
    } else if prefix.ends_with("kubepods") {
        QosClass::Guaranteed
    } else {
        return None;
    };
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some((uid, qos))
}

/// `kubepods/pod<uid>` (guaranteed) or `kubepods/<qos>/pod<uid>`.
fn cgroupfs_pod<'a>(
    mut ancestors: impl Iterator<Item = &'a str>,
    parent: Option<&str>,
    component: &str,
) -> Option<(String, QosClass)> {
    let uid = component.strip_prefix("pod")?;
    if !is_uid(uid) {
        return None;
    }
    let qos = match parent? {
        "kubepods" => QosClass::Guaranteed,
        "burstable" => QosClass::Burstable,
        "besteffort" => QosClass::BestEffort,
        _ => return None,
    };
    // `burstable` and `besteffort` must themselves sit in `kubepods`.
    if qos != QosClass::Guaranteed {
        ancestors.next();
        if ancestors.next() != Some("kubepods") {
            return None;
        }
    }
    Some((uid.to_owned(), qos))
}

/// A pod UID: 36 characters, hex digits and dashes (8-4-4-4-12).
fn is_uid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Scope prefixes container runtimes use, most specific first.
const SCOPE_PREFIXES: [(&str, ContainerRuntime); 7] = [
    ("cri-containerd-", ContainerRuntime::Containerd),
    ("nerdctl-", ContainerRuntime::Containerd),
    ("crio-conmon-", ContainerRuntime::Crio),
    ("crio-", ContainerRuntime::Crio),
    ("docker-", ContainerRuntime::Docker),
    ("libpod-conmon-", ContainerRuntime::Podman),
    ("libpod-", ContainerRuntime::Podman),
];

/// A container's cgroup inside a pod: a runtime's scope (systemd driver),
/// `crio-<id>` (CRI-O with cgroupfs) or a bare id (cgroupfs).
fn container_id(component: &str) -> Option<ContainerId> {
    if let Some(scoped) = runtime_scope(component) {
        return Some(ContainerId {
            runtime: Some(scoped.runtime),
            id: scoped.id,
        });
    }
    is_container_id(component).then(|| ContainerId {
        runtime: None,
        id: component.to_owned(),
    })
}

fn runtime_scope(component: &str) -> Option<HostContainer> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = stem.strip_prefix(prefix)?;
        is_container_id(id).then(|| HostContainer {
            runtime: *runtime,
            id: id.to_owned(),
        })
    })
}

/// A container outside Kubernetes: a runtime's scope anywhere (systemd
/// driver, rootless podman under `user@UID.service` included), or a bare id
/// under docker's or podman's cgroupfs parents.
fn host_container(ancestors: &[&str], component: &str) -> Option<HostContainer> {
    if let Some(container) = runtime_scope(component) {
        return Some(container);
    }
    if !is_container_id(component) {
        return None;
    }
    let runtime = match *ancestors.last()? {
        "docker" => ContainerRuntime::Docker,
        "libpod_parent" => ContainerRuntime::Podman,
        _ => return None,
    };
    Some(HostContainer {
        runtime,
        id: component.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0c3f8a1e-5b2d-4c9e-8f7a-1d2e3f4a5b6c";
    const UID_: &str = "0c3f8a1e_5b2d_4c9e_8f7a_1d2e3f4a5b6c";
    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn pod(qos: QosClass, runtime: Option<ContainerRuntime>) -> CgroupOwner {
        CgroupOwner::Pod {
            uid: UID.into(),
            qos,
            container: Some(ContainerId {
                runtime,
                id: ID.into(),
            }),
        }
    }

    fn host(runtime: ContainerRuntime) -> CgroupOwner {
        CgroupOwner::Container(HostContainer {
            runtime,
            id: ID.into(),
        })
    }

    #[test]
    fn every_kubernetes_form() {
        use ContainerRuntime::*;
        use QosClass::*;
        let table: Vec<(String, CgroupOwner)> = vec![
            // systemd driver, each runtime, each QoS class.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Burstable, Some(Containerd)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                pod(Guaranteed, Some(Containerd)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(BestEffort, Some(Containerd)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
                ),
                pod(Burstable, Some(Crio)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"
                ),
                pod(BestEffort, Some(Crio)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope/container"),
                pod(Guaranteed, Some(Crio)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope"
                ),
                pod(BestEffort, Some(Docker)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/libpod-{ID}.scope"
                ),
                pod(Burstable, Some(Podman)),
            ),
            // cgroupfs driver.
            (format!("/kubepods/pod{UID}/{ID}"), pod(Guaranteed, None)),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                pod(Burstable, None),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                pod(BestEffort, None),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
                pod(Burstable, Some(Crio)),
            ),
            // Nested: kind nodes, kubelet.slice, a node container above.
            (
                format!(
                    "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(BestEffort, Some(Containerd)),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(Guaranteed, Some(Containerd)),
            ),
            // A sub-cgroup a container made for itself.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/worker"),
                pod(Burstable, None),
            ),
            // The pod cgroup itself.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                CgroupOwner::Pod {
                    uid: UID.into(),
                    qos: Burstable,
                    container: None,
                },
            ),
        ];
        for (path, expected) in table {
            assert_eq!(parse(&path), expected, "{path}");
        }
    }

    #[test]
    fn hosts_and_containers_outside_kubernetes() {
        use ContainerRuntime::*;
        let table: Vec<(String, CgroupOwner)> = vec![
            (format!("/system.slice/docker-{ID}.scope"), host(Docker)),
            (format!("/docker/{ID}"), host(Docker)),
            (format!("/machine.slice/libpod-{ID}.scope"), host(Podman)),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                host(Podman),
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                host(Podman),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                host(Podman),
            ),
            (format!("/libpod_parent/libpod-{ID}"), host(Podman)),
            (
                format!("/system.slice/nerdctl-{ID}.scope"),
                host(Containerd),
            ),
            (
                format!("/system.slice/cri-containerd-{ID}.scope"),
                host(Containerd),
            ),
            (
                "/system.slice/nginx.service".into(),
                CgroupOwner::SystemdUnit("nginx.service".into()),
            ),
            (
                "/system.slice/containerd.service".into(),
                CgroupOwner::SystemdUnit("containerd.service".into()),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service".into(),
                CgroupOwner::SystemdUnit("dbus.service".into()),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                CgroupOwner::SystemdUnit("session-3.scope".into()),
            ),
            (
                "/system.slice/postgresql@15-main.service/worker".into(),
                CgroupOwner::SystemdUnit("postgresql@15-main.service".into()),
            ),
            (
                "/init.scope".into(),
                CgroupOwner::SystemdUnit("init.scope".into()),
            ),
            ("/".into(), CgroupOwner::Other),
            ("/eastwatch-tests/cli1x0".into(), CgroupOwner::Other),
        ];
        for (path, expected) in table {
            assert_eq!(parse(&path), expected, "{path}");
        }
    }

    #[test]
    fn near_misses_are_not_pods_or_containers() {
        for path in [
            // Not a UID.
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podxyz.slice",
            // A pod directory outside kubepods.
            &format!("/other/burstable/pod{UID}/{ID}"),
            &format!("/mypods/pod{UID}"),
            // A short id is not a container id.
            "/docker/4f1e2d3c4b5a",
            "/system.slice/docker-abc.scope",
        ] {
            assert!(
                !matches!(
                    parse(path),
                    CgroupOwner::Pod { .. } | CgroupOwner::Container(_)
                ),
                "{path}: {:?}",
                parse(path)
            );
        }
        assert_eq!(
            parse("/system.slice/docker-abc.scope"),
            CgroupOwner::SystemdUnit("docker-abc.scope".into())
        );
    }
}
