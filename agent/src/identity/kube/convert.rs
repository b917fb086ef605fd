//! Kubernetes objects → the compact records eastwatch keeps.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::store::{NodeRecord, ObjectKey, PodRecord, ServicePort, ServiceRecord, SliceRecord};
use eastwatch_policy::identity::{Workload, WorkloadKind};

/// Labels that differ between pods of one workload (or between runs of a
/// Job); a workload's labels are its pods' labels without them.
const POD_SPECIFIC_LABELS: [&str; 10] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

pub fn workload_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !POD_SPECIFIC_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn parse_ips<'a>(texts: impl IntoIterator<Item = &'a str>) -> Box<[IpAddr]> {
    let mut ips: Vec<IpAddr> = texts
        .into_iter()
        .filter_map(|t| t.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_boxed_slice()
}

/// The pod's record, given its workload's kind and name (from the owner
/// chain).
pub fn pod_record(pod: &Pod, cluster: &str, kind: WorkloadKind, name: String) -> Option<PodRecord> {
    let uid = pod.metadata.uid.as_deref()?;
    let namespace = pod.namespace()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let service_account = spec
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let ips = status
        .map(|s| {
            let listed = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
            parse_ips(listed.chain(s.pod_ip.as_deref()))
        })
        .unwrap_or_default();
    let phase = status.and_then(|s| s.phase.as_deref());
    Some(PodRecord {
        uid: uid.into(),
        name: pod.name_any().into(),
        workload: Arc::new(Workload {
            cluster: cluster.to_owned(),
            namespace,
            kind,
            name,
            service_account,
            labels: workload_labels(pod.labels()),
        }),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        live: !matches!(phase, Some("Succeeded" | "Failed")),
    })
}

pub fn service_record(service: &Service) -> Option<ServiceRecord> {
    let spec = service.spec.as_ref();
    let cluster_ips = spec
        .into_iter()
        .flat_map(|s| s.cluster_ips.iter().flatten().chain(s.cluster_ip.iter()));
    let external = spec
        .into_iter()
        .flat_map(|s| s.external_ips.iter().flatten());
    let balancers = service
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_ref());
    Some(ServiceRecord {
        key: ObjectKey {
            namespace: service.namespace()?.into(),
            name: service.name_any().into(),
        },
        ips: parse_ips(
            cluster_ips
                .chain(external)
                .chain(balancers)
                .map(String::as_str),
        ),
        ports: spec
            .into_iter()
            .flat_map(|s| s.ports.iter().flatten())
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.as_deref().filter(|n| !n.is_empty()).map(Into::into),
                    port: u16::try_from(p.port).ok()?,
                    // A named targetPort is the slices' to tell; absent,
                    // it is the port itself.
                    target: match &p.target_port {
                        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                        Some(IntOrString::String(_)) => None,
                        None => u16::try_from(p.port).ok(),
                    },
                })
            })
            .collect(),
    })
}

pub fn slice_record(slice: &EndpointSlice) -> Option<SliceRecord> {
    let namespace: Arc<str> = slice.namespace()?.into();
    let service = slice
        .labels()
        .get("kubernetes.io/service-name")
        .map(|name| ObjectKey {
            namespace: namespace.clone(),
            name: name.as_str().into(),
        });
    // `ready` unset means ready (the API's own reading).
    let addresses = slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().map(String::as_str));
    Some(SliceRecord {
        key: ObjectKey {
            namespace,
            name: slice.name_any().into(),
        },
        service,
        addresses: parse_ips(addresses),
        ports: slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                // An unnamed port is "" in slices, absent in Services.
                let name = p.name.as_deref().filter(|n| !n.is_empty());
                Some((name.map(Into::into), port))
            })
            .collect(),
    })
}

pub fn node_record(node: &Node) -> NodeRecord {
    let addresses = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .map(|a| a.address.as_str());
    NodeRecord {
        name: node.name_any().into(),
        ips: parse_ips(addresses),
    }
}
