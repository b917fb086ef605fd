//! Memory of the Kubernetes store, measured: 1,000 real-shaped pods (100
//! Deployments of 10), their 100 Services and EndpointSlices and 10 nodes
//! go through the same conversion and store the watches use, and a
//! counting allocator reports the bytes the store keeps.
//!
//! `cargo test -p eastwatch --test identity_memory -- --nocapture` prints
//! the figures; the bounds only catch a store that stopped being compact.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
    time::SystemTime,
};

use eastwatch::{ClusterState, Record, ResourceKind, convert};
use eastwatch_policy::identity::WorkloadKind;
use eastwatch_tests::kube_api::objects::{self, PodSpec};
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated by `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for realloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const DEPLOYMENTS: usize = 100;
const REPLICAS: usize = 10;

fn pod_json(d: usize, r: usize) -> serde_json::Value {
    let name = format!("service-{d:03}");
    let uid = objects::uid_from(&format!("pod/{d}/{r}"));
    let ip = format!("10.{}.{}.{}", 20 + d / 200, d % 200, r + 2);
    objects::pod(&PodSpec {
        namespace: &format!("team-{}", d % 10),
        deployment: &name,
        hash: "5f6d7c8b9",
        suffix: &format!("a{r:04}"),
        uid: &uid,
        node: &format!("node-{}", (d * REPLICAS + r) % 10),
        ip: &ip,
        service_account: &name,
        labels: &json!({"app": name, "team": format!("team-{}", d % 10), "version": "v1"}),
    })
}

fn add_pods(state: &mut ClusterState) {
    for d in 0..DEPLOYMENTS {
        for r in 0..REPLICAS {
            let pod: Pod = serde_json::from_value(pod_json(d, r)).expect("a Pod");
            let record = convert::pod_record(
                &pod,
                "prod-eu-1",
                WorkloadKind::Deployment,
                format!("service-{d:03}"),
            )
            .expect("record");
            state.apply(ResourceKind::Pods, Record::Pod(record), SystemTime::now());
        }
    }
}

fn add_services_and_nodes(state: &mut ClusterState) {
    for d in 0..DEPLOYMENTS {
        let name = format!("service-{d:03}");
        let namespace = format!("team-{}", d % 10);
        let cluster_ip = format!("10.96.{}.{}", d / 200, d % 200 + 1);
        let service: Service = serde_json::from_value(objects::service(
            &namespace,
            &name,
            &cluster_ip,
            80,
            8080,
            &json!({"app": name}),
        ))
        .expect("a Service");
        state.apply(
            ResourceKind::Services,
            Record::Service(convert::service_record(&service).expect("record")),
            SystemTime::now(),
        );
        let endpoints: Vec<(String, String, String)> = (0..REPLICAS)
            .map(|r| {
                (
                    format!("{name}-5f6d7c8b9-a{r:04}"),
                    format!("10.{}.{}.{}", 20 + d / 200, d % 200, r + 2),
                    format!("node-{}", (d * REPLICAS + r) % 10),
                )
            })
            .collect();
        let borrowed: Vec<(&str, &str, &str)> = endpoints
            .iter()
            .map(|(p, i, n)| (p.as_str(), i.as_str(), n.as_str()))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(objects::endpoint_slice(
            &namespace, &name, "x7k2p", 8080, &borrowed,
        ))
        .expect("an EndpointSlice");
        state.apply(
            ResourceKind::EndpointSlices,
            Record::Slice(convert::slice_record(&slice).expect("record")),
            SystemTime::now(),
        );
    }
    for n in 0..10 {
        let node: Node = serde_json::from_value(objects::node(
            &format!("node-{n}"),
            &format!("192.0.2.{}", n + 1),
        ))
        .expect("a Node");
        state.apply(
            ResourceKind::Nodes,
            Record::Node(convert::node_record(&node)),
            SystemTime::now(),
        );
    }
}

#[test]
fn memory_per_thousand_pods() {
    // Warm up anything lazily allocated once (serde, formatting).
    {
        let mut warm = ClusterState::default();
        add_pods(&mut warm);
        add_services_and_nodes(&mut warm);
    }
    let before = live();
    let mut state = ClusterState::default();
    add_pods(&mut state);
    let pods = live() - before;
    add_services_and_nodes(&mut state);
    let everything = live() - before;
    state.replace(ResourceKind::LocalPods, Vec::new(), SystemTime::now());
    assert_eq!(state.count(ResourceKind::Pods), DEPLOYMENTS * REPLICAS);
    assert!(
        state
            .pod_by_ip("10.20.5.3".parse().expect("ip"))
            .is_some_and(|p| p.workload.name == "service-005"),
        "the store answers"
    );
    let one_json = serde_json::to_string(&pod_json(0, 0)).expect("json").len();
    println!(
        "store: {pods} bytes for 1,000 pods ({} per pod; one pod's JSON is {one_json} bytes); \
         {everything} bytes with 100 Services, 100 EndpointSlices (1,000 endpoints) and 10 nodes",
        pods / 1000
    );
    drop(state);
    assert!(pods > 0);
    assert!(
        pods < 1024 * 1024,
        "1,000 pods take {pods} bytes: the store is no longer compact"
    );
}
