//! A one-time read of the cluster for `baseline export`: each workload's
//! pod labels as the identity model has them (owner chain followed,
//! per-pod labels left out), service accounts and named container ports,
//! and each Service's selector and ports.

use std::{collections::BTreeMap, fmt::Debug, time::Duration};

use anyhow::Context as _;
use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::de::DeserializeOwned;

use super::{convert::workload_labels, owners::OwnerCache};
use eastwatch_policy::{
    flow::Transport,
    tools::netpol::{ClusterFacts, ServiceFacts, ServicePortFacts, TargetPort, WorkloadFacts},
};

const PAGE: u32 = 500;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Every page of a cluster-wide list.
async fn list_all<K>(api: Api<K>) -> kube::Result<Vec<K>>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

fn transport(protocol: Option<&str>) -> Option<Transport> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(Transport::Tcp),
        "UDP" => Some(Transport::Udp),
        _ => None,
    }
}

/// Pods and Services of the whole cluster, as facts for the export.
pub async fn read(client: Client, source: &str) -> anyhow::Result<ClusterFacts> {
    tokio::time::timeout(TIMEOUT, read_now(client, source))
        .await
        .with_context(|| format!("{source}: no answer within {}s", TIMEOUT.as_secs()))?
}

async fn read_now(client: Client, source: &str) -> anyhow::Result<ClusterFacts> {
    let pods = list_all(Api::<Pod>::all(client.clone()))
        .await
        .with_context(|| format!("{source}: listing pods"))?;
    let services = list_all(Api::<Service>::all(client.clone()))
        .await
        .with_context(|| format!("{source}: listing services"))?;
    let owners = OwnerCache::new(client);
    let mut workloads: BTreeMap<String, WorkloadFacts> = BTreeMap::new();
    for pod in &pods {
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some((namespace, kind, name)) = owners.workload_of_pod(pod).await else {
            continue;
        };
        let facts = WorkloadFacts {
            namespace,
            kind: kind.as_str().to_owned(),
            name,
            ..WorkloadFacts::default()
        };
        let facts = workloads.entry(facts.canonical()).or_insert(facts);
        facts.label_sets.insert(workload_labels(pod.labels()));
        let spec = pod.spec.as_ref();
        facts.service_accounts.insert(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        );
        for port in spec
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
        {
            if let (Some(name), Ok(number)) = (&port.name, u16::try_from(port.container_port)) {
                facts
                    .named_ports
                    .entry(name.clone())
                    .or_default()
                    .insert(number);
            }
        }
    }
    let services = services
        .iter()
        .filter_map(|service| {
            let spec = service.spec.as_ref()?;
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok()?;
                    let target = match &p.target_port {
                        None => TargetPort::Number(port),
                        Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
                        Some(IntOrString::String(name)) => match name.parse::<u16>() {
                            Ok(n) => TargetPort::Number(n),
                            Err(_) => TargetPort::Name(name.clone()),
                        },
                    };
                    Some(ServicePortFacts {
                        port,
                        transport: transport(p.protocol.as_deref())?,
                        target,
                    })
                })
                .collect();
            Some(ServiceFacts {
                namespace: service.namespace()?,
                name: service.name_any(),
                selector: spec.selector.clone().unwrap_or_default(),
                ports,
            })
        })
        .collect();
    Ok(ClusterFacts {
        source: source.to_owned(),
        workloads: workloads.into_values().collect(),
        services: Some(services),
    })
}
