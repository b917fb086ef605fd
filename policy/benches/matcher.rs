//! Flows judged per second by the compiled matcher and by a linear scan of
//! the same rules, for baselines of 10k and 100k edges. Run with
//! `cargo xtask bench`.

// A benchmark stops at the first thing that is not as it set it up.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeMap,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use eastwatch_policy::{
    baseline::{
        format::{BaselineDoc, Edge, LabelSelector, Located, Selector, WorkloadSelector},
        matcher::{Matcher, ObservedEdge, RuleMatch, judge_linear},
        validate,
    },
    flow::Transport,
    identity::{Identity, Workload, WorkloadKind},
};

/// A small deterministic generator (no dependency, same numbers every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below.max(1)
    }
}

const NAMESPACES: usize = 200;

fn workload(i: usize) -> Identity {
    Identity::Workload(Workload {
        cluster: "bench".into(),
        namespace: format!("ns{}", i % NAMESPACES),
        kind: WorkloadKind::Deployment,
        name: format!("svc{i}"),
        service_account: format!("svc{i}"),
        labels: BTreeMap::from([("app".into(), format!("svc{i}"))]),
    })
}

fn selector_of(i: usize) -> Selector {
    Selector {
        namespace: Some(format!("ns{}", i % NAMESPACES)),
        workload: Some(WorkloadSelector {
            kind: Some("Deployment".into()),
            name: format!("svc{i}"),
        }),
        ..Selector::default()
    }
}

/// `edges` rules: most workload to workload, every tenth to a /24 outside
/// the cluster, every hundredth by namespace and label.
fn baseline(
    edges: usize,
    workloads: usize,
    rng: &mut Lcg,
) -> (validate::Baseline, Vec<ObservedEdge>) {
    let mut doc = BaselineDoc::new("bench");
    let mut allowed = Vec::new();
    for i in 0..edges {
        let from = rng.next(workloads);
        let port = 1000 + rng.next(2000) as u16;
        let (to_selector, to_identity) = if i % 10 == 0 {
            let net = format!("10.{}.{}.0/24", (i / 256) % 256, i % 256);
            let ip = format!("10.{}.{}.7", (i / 256) % 256, i % 256);
            (
                Selector {
                    cidr: Some(net),
                    ..Selector::default()
                },
                Identity::External {
                    address: ip.parse().expect("ip"),
                },
            )
        } else {
            let to = rng.next(workloads);
            (selector_of(to), workload(to))
        };
        let from_selector = if i % 100 == 0 {
            Selector {
                namespace: Some(format!("ns{}", from % NAMESPACES)),
                labels: Some(LabelSelector {
                    match_labels: BTreeMap::from([("app".into(), format!("svc{from}"))]),
                    match_expressions: Vec::new(),
                }),
                ..Selector::default()
            }
        } else {
            selector_of(from)
        };
        doc.spec.edges.push(Located::new(Edge {
            from: Located::new(from_selector),
            to: Located::new(to_selector),
            ports: Located::new(vec![Located::new(format!("{port}/tcp"))]),
            reason: None,
            owner: None,
            expires: None,
        }));
        allowed.push(ObservedEdge {
            from: workload(from),
            to: to_identity,
            port,
            transport: Transport::Tcp,
        });
    }
    let (baseline, _) =
        validate::check(doc, "bench.yaml", SystemTime::now()).expect("generated baseline is valid");
    (baseline, allowed)
}

/// Half allowed edges, half lateral moves between random workloads.
fn flows(
    allowed: &[ObservedEdge],
    workloads: usize,
    count: usize,
    rng: &mut Lcg,
) -> Vec<ObservedEdge> {
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                allowed[rng.next(allowed.len())].clone()
            } else {
                ObservedEdge {
                    from: workload(rng.next(workloads)),
                    to: workload(rng.next(workloads)),
                    port: 1000 + rng.next(2000) as u16,
                    transport: Transport::Tcp,
                }
            }
        })
        .collect()
}

fn rate(flows: usize, elapsed: Duration) -> f64 {
    flows as f64 / elapsed.as_secs_f64()
}

fn main() {
    let now = SystemTime::now();
    println!(
        "{:>8} {:>16} {:>16} {:>9}",
        "edges", "compiled flows/s", "linear flows/s", "ratio"
    );
    for edges in [10_000usize, 100_000] {
        let mut rng = Lcg(edges as u64);
        let workloads = edges / 4;
        let (baseline, allowed) = baseline(edges, workloads, &mut rng);
        let matcher = Matcher::new(Arc::new(baseline.clone()));
        let sample = flows(&allowed, workloads, 200_000, &mut rng);

        // Both must agree before either is timed.
        for edge in sample.iter().take(200) {
            let a = matches!(matcher.judge(edge, now), RuleMatch::Allowed(_));
            let b = matches!(judge_linear(&baseline, edge, now), RuleMatch::Allowed(_));
            assert_eq!(a, b, "compiled and linear disagree on {edge}");
        }

        let started = Instant::now();
        let mut allowed_count = 0usize;
        for edge in &sample {
            if matches!(
                black_box(matcher.judge(black_box(edge), now)),
                RuleMatch::Allowed(_)
            ) {
                allowed_count += 1;
            }
        }
        let compiled = rate(sample.len(), started.elapsed());
        black_box(allowed_count);

        // The linear scan is slow by design: time fewer flows.
        let linear_flows = (20_000_000 / edges).max(100);
        let started = Instant::now();
        for edge in sample.iter().take(linear_flows) {
            black_box(judge_linear(black_box(&baseline), black_box(edge), now));
        }
        let linear = rate(linear_flows, started.elapsed());
        println!(
            "{edges:>8} {compiled:>16.0} {linear:>16.0} {:>8.0}x",
            compiled / linear
        );
    }
}
