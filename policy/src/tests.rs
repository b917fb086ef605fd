//! Parser and lint tests with golden output (`policy/testdata/baseline`).
//! `EASTWATCH_BLESS=1` rewrites the expected files.

use std::{path::PathBuf, time::SystemTime};

use crate::{
    baseline::{diag::Diagnostic, validate},
    config,
};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/baseline")
        .join(name)
}

/// Lint output as `eastwatch baseline lint` prints it, with the file named
/// relative to the test data.
fn lint_output(name: &str) -> String {
    let text = std::fs::read_to_string(testdata(name)).expect("test file");
    let diagnostics = match validate::from_str(&text, name, SystemTime::now()) {
        Ok((_, warnings)) => warnings,
        Err(rejected) => rejected.0,
    };
    let lines: Vec<String> = diagnostics.iter().map(Diagnostic::to_string).collect();
    lines.join("\n") + "\n"
}

fn golden(name: &str) {
    let actual = lint_output(name);
    let expected_path = testdata(&format!("{name}.expected"));
    if std::env::var_os("EASTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("bless");
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(actual, expected, "lint output of {name} changed");
}

#[test]
fn agent_config_errors_have_their_position() {
    let name = "agent-errors.yaml";
    let text = std::fs::read_to_string(testdata(name)).expect("test file");
    let actual = match config::from_str(&text, std::path::Path::new(name)) {
        Ok(_) => "accepted\n".to_owned(),
        Err(rejected) => format!("{rejected}\n"),
    };
    let expected_path = testdata(&format!("{name}.expected"));
    if std::env::var_os("EASTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("bless");
    }
    assert_eq!(
        actual,
        std::fs::read_to_string(&expected_path).unwrap_or_default()
    );
}

#[test]
fn agent_config_resolves_paths_and_scopes() {
    let text = "apiVersion: eastwatch.io/v1\nkind: AgentConfig\nspec:\n  scopes:\n    - mode: learn\n      match: {cgroup: /team/*}\n  baseline: b.yaml\n  learn: {out: learned.yaml}\n";
    let config =
        config::from_str(text, std::path::Path::new("/etc/eastwatch/agent.yaml")).expect("valid");
    assert_eq!(
        config.baseline.as_deref(),
        Some(std::path::Path::new("/etc/eastwatch/b.yaml"))
    );
    let team = crate::identity::Identity::Cgroup {
        path: "/team/svc".into(),
    };
    let other = crate::identity::Identity::Cgroup {
        path: "/other".into(),
    };
    assert_eq!(config.scopes.mode_for(&team), crate::alert::Mode::Learn);
    assert_eq!(config.scopes.mode_for(&other), crate::alert::Mode::Monitor);
}

#[test]
fn valid_baseline_loads_and_dns_from_everywhere_warns() {
    golden("valid.yaml");
}

#[test]
fn every_semantic_error_has_its_position() {
    golden("errors.yaml");
}

#[test]
fn structural_errors_have_their_position() {
    golden("structural.yaml");
}

#[test]
fn over_broad_expired_and_duplicate_edges_warn() {
    golden("warnings.yaml");
}

mod behaviour {
    use std::{
        net::{IpAddr, SocketAddr},
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use proptest::prelude::*;

    use crate::{
        alert::AlertVerdict,
        baseline::{
            format::json_schema,
            matcher::{Matcher, ObservedEdge, RuleMatch, Verdict, judge_linear},
            validate,
        },
        flow::{Direction, Flow, Outcome, Transport},
        identity::{Identity, ResolvedEnd, ResolvedFlow},
        judge::{Judge, JudgeConfig},
        learn::Learner,
        tools,
    };

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A flow owned by cgroup `/tier/<owner>` with `remote` on `port`.
    fn flow(
        direction: Direction,
        owner: &str,
        remote: &str,
        port: u16,
        transport: Transport,
    ) -> ResolvedFlow {
        let remote_ip: IpAddr = remote.parse().expect("ip");
        let local_ip: IpAddr = if remote_ip.is_ipv4() {
            "10.9.9.9".parse().expect("ip")
        } else {
            "fd99::9".parse().expect("ip")
        };
        let (local_port, remote_port) = match direction {
            Direction::Egress => (40000, port),
            Direction::Ingress => (port, 40000),
        };
        let flow = Flow {
            first_seen: t0(),
            ..Flow::example(
                direction,
                transport,
                SocketAddr::new(local_ip, local_port),
                SocketAddr::new(remote_ip, remote_port),
                7,
            )
            .owned_by(&format!("/tier/{owner}"))
        };
        resolve_on_host(flow)
    }

    /// Identities from what every host has: the owner's cgroup path and
    /// the remote address itself.
    fn resolve_on_host(flow: Flow) -> ResolvedFlow {
        let local = match &flow.owner.path {
            Some(path) => ResolvedEnd::plain(Identity::Cgroup {
                path: path.to_string(),
            }),
            None => ResolvedEnd::plain(Identity::Unknown {
                what: format!("cgroup-id/{}", flow.owner.id),
            }),
        };
        let remote = ResolvedEnd::plain(Identity::External {
            address: flow.remote.ip().to_canonical(),
        });
        ResolvedFlow {
            flow,
            local,
            remote,
        }
    }

    fn learned(flows: &[ResolvedFlow]) -> validate::Baseline {
        let mut learner = Learner::new(t0());
        for f in flows {
            learner.observe(f, 1, t0());
        }
        let yaml = learner.baseline("test").to_yaml().expect("yaml");
        validate::from_str(&yaml, "learned.yaml", t0())
            .expect("learned baseline is valid")
            .0
    }

    fn judge_with(baseline: validate::Baseline, config: JudgeConfig) -> Judge {
        Judge::new(Arc::new(Matcher::new(Arc::new(baseline))), config)
    }

    #[test]
    fn the_checked_in_schema_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/baseline.schema.json");
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            shipped,
            json_schema(),
            "docs/baseline.schema.json is stale: eastwatch baseline schema > docs/baseline.schema.json"
        );
    }

    #[test]
    fn learned_baselines_are_deterministic_and_free_of_counters() {
        let flows = [
            flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp),
            flow(Direction::Egress, "web", "10.0.0.2", 8443, Transport::Tcp),
            flow(Direction::Ingress, "db", "10.0.0.2", 5432, Transport::Tcp),
            flow(Direction::Egress, "web", "fd00::53", 53, Transport::Udp),
        ];
        let mut a = Learner::new(t0());
        let mut b = Learner::new(t0() + Duration::from_secs(99));
        for (i, f) in flows.iter().enumerate() {
            a.observe(f, 1, t0() + Duration::from_secs(i as u64));
        }
        for f in flows.iter().rev() {
            b.observe(f, 5, t0() + Duration::from_secs(500));
        }
        let (ya, yb) = (
            a.baseline("x").to_yaml().expect("yaml"),
            b.baseline("x").to_yaml().expect("yaml"),
        );
        assert_eq!(ya, yb, "order and counts do not change the file");
        assert!(!ya.contains("180000") && !ya.contains("count"), "{ya}");
        // Two ports between the same ends are one edge.
        assert_eq!(a.baseline("x").spec.edges.len(), 3, "{ya}");
        assert!(
            ya.contains("- 8080/tcp\n") && ya.contains("- 8443/tcp\n"),
            "{ya}"
        );
    }

    #[test]
    fn checkpoints_resume_and_convergence_counts_from_the_last_new_edge() {
        let mut learner = Learner::new(t0());
        let web_app = flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp);
        assert!(
            learner
                .observe(&web_app, 1, t0() + Duration::from_secs(10))
                .is_some()
        );
        assert!(
            learner
                .observe(&web_app, 3, t0() + Duration::from_secs(20))
                .is_none()
        );
        assert_eq!(
            learner.converged_for(t0() + Duration::from_secs(70)),
            Duration::from_secs(60)
        );
        let text = serde_json::to_string(&learner.checkpoint()).expect("json");
        let resumed = Learner::resume(serde_json::from_str(&text).expect("parse"));
        assert_eq!(resumed.checkpoint(), learner.checkpoint());
        let evidence = resumed.evidence(t0() + Duration::from_secs(70));
        assert_eq!(evidence.edges[0].count, 4);
        assert_eq!(evidence.edges[0].attempts, 0);
        let mut refused = flow(Direction::Egress, "web", "10.0.0.9", 9, Transport::Tcp);
        refused.flow.key.outcome = Outcome::Attempted;
        let mut learner = resumed;
        learner.observe(&refused, 2, t0() + Duration::from_secs(80));
        let attempted = learner.evidence(t0() + Duration::from_secs(80));
        let edge = attempted
            .edges
            .iter()
            .find(|e| e.port == 9)
            .expect("learned");
        assert_eq!((edge.count, edge.attempts), (2, 2));
        assert_eq!(evidence.converged_for_secs, 60);
    }

    #[test]
    fn both_observations_of_a_connection_count_once_in_the_repeat_report() {
        let baseline = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )]);
        let mut judge = judge_with(
            baseline,
            JudgeConfig {
                window: Duration::from_secs(60),
                ..JudgeConfig::default()
            },
        );
        // The client's egress and the server's ingress of one connection:
        // the same two ends, seen from either side.
        let egress = flow(Direction::Egress, "web", "10.0.0.3", 5432, Transport::Tcp);
        let mut ingress = flow(Direction::Ingress, "db", "10.9.9.9", 5432, Transport::Tcp);
        ingress.local = egress.remote.clone();
        ingress.remote = egress.local.clone();
        let at = |s: u64| t0() + Duration::from_secs(s);
        assert_eq!(judge.judge(&egress, 1, at(0)).alerts.len(), 1);
        assert!(judge.judge(&ingress, 1, at(0)).alerts.is_empty());
        assert!(
            judge.tick(at(61)).is_empty(),
            "one connection seen from both ends is no repeat"
        );
        // Next window: one alert, then three more connections, each seen
        // from both ends, in any order.
        assert_eq!(judge.judge(&ingress, 1, at(62)).alerts.len(), 1);
        assert!(judge.judge(&egress, 1, at(62)).alerts.is_empty());
        assert!(judge.judge(&egress, 2, at(63)).alerts.is_empty());
        assert!(judge.judge(&ingress, 3, at(64)).alerts.is_empty());
        assert!(judge.judge(&egress, 1, at(65)).alerts.is_empty());
        let reports = judge.tick(at(123));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].flow.as_ref().map(|f| f.count), Some(3));
    }

    #[test]
    fn an_edge_alerts_once_per_window_and_repeats_are_reported_at_its_end() {
        let baseline = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )]);
        let mut judge = judge_with(
            baseline,
            JudgeConfig {
                window: Duration::from_secs(60),
                ..JudgeConfig::default()
            },
        );
        let allowed = flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp);
        assert!(judge.judge(&allowed, 1, t0()).alerts.is_empty());
        let lateral = flow(Direction::Egress, "web", "10.0.0.3", 5432, Transport::Tcp);
        let first = judge.judge(&lateral, 1, t0()).alerts;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].verdict.map(|v| v.as_str()), Some("unauthorized"));
        for i in 1..=4 {
            assert!(
                judge
                    .judge(&lateral, 2, t0() + Duration::from_secs(i))
                    .alerts
                    .is_empty()
            );
        }
        assert!(
            judge.tick(t0() + Duration::from_secs(30)).is_empty(),
            "window still open"
        );
        let reports = judge.tick(t0() + Duration::from_secs(61));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].details["report"], "repeat");
        assert_eq!(reports[0].flow.as_ref().map(|f| f.count), Some(8));
        // A new window: the edge alerts again.
        assert_eq!(
            judge
                .judge(&lateral, 1, t0() + Duration::from_secs(62))
                .alerts
                .len(),
            1
        );
    }

    #[test]
    fn a_late_repeat_without_a_tick_starts_the_next_window() {
        let baseline = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )]);
        let mut judge = judge_with(
            baseline,
            JudgeConfig {
                window: Duration::from_secs(60),
                ..JudgeConfig::default()
            },
        );
        let lateral = flow(Direction::Egress, "web", "10.0.0.3", 5432, Transport::Tcp);
        assert_eq!(judge.judge(&lateral, 1, t0()).alerts.len(), 1);
        assert!(
            judge
                .judge(&lateral, 1, t0() + Duration::from_secs(5))
                .alerts
                .is_empty()
        );
        let later = judge
            .judge(&lateral, 1, t0() + Duration::from_secs(90))
            .alerts;
        let reports: Vec<&str> = later.iter().map(|a| a.details["report"].as_str()).collect();
        assert_eq!(reports, ["repeat", "first"]);
    }

    #[test]
    fn rules_that_allowed_nothing_are_reported_unused() {
        let baseline = learned(&[
            flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp),
            flow(Direction::Egress, "app", "10.0.0.3", 5432, Transport::Tcp),
        ]);
        let mut judge = judge_with(baseline, JudgeConfig::default());
        judge.judge(
            &flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp),
            1,
            t0(),
        );
        let unused = judge.unused_rules();
        assert_eq!(unused.len(), 1, "{unused:?}");
        assert!(unused[0].contains("/tier/app"), "{unused:?}");
    }

    #[test]
    fn privilege_report_names_unused_edges_and_blast_radius() {
        let text = "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata: {name: x}\nspec:\n  edges:\n    - from: {cgroup: /tier/web}\n      to: {cidr: 10.0.0.2}\n      ports: [\"8080/tcp\", \"8443/tcp\"]\n    - from: {cgroup: /tier/web}\n      to: {cidr: 10.0.0.0/16}\n      ports: [\"9000-9009/tcp\"]\n    - from: {cgroup: /tier/app}\n      to: {cidr: 10.0.0.3}\n      ports: [\"5432/tcp\"]\n";
        let (baseline, _) = validate::from_str(text, "x.yaml", t0()).expect("valid");
        let mut learner = Learner::new(t0());
        learner.observe(
            &flow(Direction::Egress, "web", "10.0.0.2", 8080, Transport::Tcp),
            1,
            t0(),
        );
        let report = tools::privilege_report(&baseline, &learner.evidence(t0()), t0());
        let unused: Vec<&str> = report.unused.iter().map(|u| u.rule.as_str()).collect();
        assert_eq!(unused.len(), 2, "{unused:?}");
        let web = report
            .blast_radius
            .iter()
            .find(|b| b.identity == "cgroup:/tier/web")
            .expect("web");
        // 10.0.0.2 and 10.0.0.3 are known and inside 10.0.0.0/16.
        assert_eq!((web.reachable, web.ports, web.open_ended_rules), (2, 12, 1));
        let app = report
            .blast_radius
            .iter()
            .find(|b| b.identity == "cgroup:/tier/app")
            .expect("app");
        assert_eq!((app.reachable, app.ports, app.open_ended_rules), (1, 1, 0));
    }

    #[test]
    fn explain_names_the_rule_or_the_nearest_and_why() {
        let (baseline, _) = validate::from_str(
            &std::fs::read_to_string(super::testdata("valid.yaml")).expect("valid.yaml"),
            "valid.yaml",
            t0(),
        )
        .expect("valid");
        let edge = |from: &str, to: &str, port: u16| ObservedEdge {
            from: tools::parse_identity(from).expect("from"),
            to: tools::parse_identity(to).expect("to"),
            port,
            transport: Transport::Tcp,
        };
        let allowed = tools::explain(
            &baseline,
            &edge(
                "workload:shop/deployment/web",
                "workload:shop/deployment/api",
                8080,
            ),
            t0(),
        );
        assert_eq!(allowed.verdict.as_str(), "allowed");
        assert!(
            allowed
                .rule
                .as_deref()
                .is_some_and(|r| r.starts_with("edges[0] (line 8)"))
        );
        let refused = tools::explain(
            &baseline,
            &edge(
                "workload:shop/deployment/web",
                "workload:shop/statefulset/db",
                5432,
            ),
            t0(),
        );
        assert_eq!(refused.verdict.as_str(), "unauthorized");
        assert!(
            refused.nearest[0].rule.starts_with("edges[1] (line 13)"),
            "{refused:?}"
        );
        assert_eq!(refused.nearest[0].reasons, ["from: no label tier"]);
        assert!(tools::parse_identity("pod:x").is_err());
        assert_eq!(
            tools::parse_identity("10.1.2.3").map(|i| i.canonical()),
            Ok("external:10.1.2.3".to_owned())
        );
    }

    #[test]
    fn techniques_follow_the_destination() {
        let baseline = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )]);
        let mut judge = judge_with(baseline, JudgeConfig::default());
        let cases = [
            ("10.0.0.5", 22, "T1021.004", "high"),
            ("10.0.0.5", 3389, "T1021.001", "high"),
            ("10.0.0.5", 5986, "T1021.006", "high"),
            ("10.0.0.5", 5901, "T1021.005", "high"),
            ("10.0.0.5", 10250, "T1552.007", "high"),
            ("10.0.0.5", 6443, "T1552.007", "high"),
            ("169.254.169.254", 80, "T1552.005", "high"),
            ("fd00:ec2::254", 80, "T1552.005", "high"),
            ("10.0.0.5", 9000, "T1210", "medium"),
        ];
        for (i, (ip, port, id, severity)) in cases.iter().enumerate() {
            // A different source each time: no fan-out.
            let f = flow(
                Direction::Egress,
                &format!("w{i}"),
                ip,
                *port,
                Transport::Tcp,
            );
            let alerts = judge.judge(&f, 1, t0()).alerts;
            assert_eq!(alerts.len(), 1, "{ip}:{port}");
            let a = &alerts[0];
            assert_eq!(
                a.technique.as_ref().map(|t| t.id.as_str()),
                Some(*id),
                "{ip}:{port}"
            );
            assert_eq!(
                serde_json::to_value(a.severity).expect("json"),
                *severity,
                "{ip}:{port}"
            );
        }
    }

    #[test]
    fn a_fan_out_becomes_one_scan_alert() {
        let baseline = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )]);
        let mut judge = judge_with(
            baseline,
            JudgeConfig {
                fan_out_threshold: 4,
                ..JudgeConfig::default()
            },
        );
        let mut alerts = Vec::new();
        for port in 1000..1050 {
            alerts.extend(
                judge
                    .judge(
                        &flow(Direction::Egress, "web", "10.0.0.3", port, Transport::Tcp),
                        1,
                        t0(),
                    )
                    .alerts,
            );
        }
        let scans: Vec<_> = alerts
            .iter()
            .filter(|a| a.details["report"] == "scan")
            .collect();
        assert_eq!(scans.len(), 1);
        assert_eq!(
            scans[0].technique.as_ref().map(|t| t.id.as_str()),
            Some("T1046")
        );
        assert_eq!(alerts.len(), 4, "three first reports, then the scan");
        let end = judge.finish(t0());
        assert_eq!(end.len(), 1);
        assert_eq!(
            end[0].flow.as_ref().map(|f| f.count),
            Some(46),
            "the folded ports"
        );
    }

    #[test]
    fn expired_rules_allow_nothing() {
        let text = "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata: {name: x}\nspec:\n  edges:\n    - from: {cgroup: /tier/web}\n      to: {cidr: 10.0.0.0/24}\n      ports: [\"80/tcp\"]\n      expires: 2027-01-01\n";
        let (baseline, _) = validate::from_str(text, "x.yaml", t0()).expect("valid");
        let matcher = Matcher::new(Arc::new(baseline.clone()));
        let edge = ObservedEdge::of(&flow(
            Direction::Egress,
            "web",
            "10.0.0.7",
            80,
            Transport::Tcp,
        ));
        let before = validate::parse_expiry("2026-12-31").expect("date");
        let after = validate::parse_expiry("2027-01-02").expect("date");
        assert_eq!(matcher.judge(&edge, before), RuleMatch::Allowed(0));
        assert_eq!(matcher.judge(&edge, after), RuleMatch::Expired(0));
        let explained = tools::explain(&baseline, &edge, after);
        assert_eq!(explained.verdict.as_str(), "expired-rule");
    }

    #[test]
    fn the_judgement_names_the_verdict_with_the_alerts() {
        let text = "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata: {name: x}\nspec:\n  edges:\n    - from: {cgroup: /tier/web}\n      to: {cidr: 10.0.0.0/24}\n      ports: [\"80/tcp\"]\n      expires: 2027-01-01\n";
        let (baseline, _) = validate::from_str(text, "x.yaml", t0()).expect("valid");
        let mut judge = judge_with(baseline, JudgeConfig::default());
        let web = |port| flow(Direction::Egress, "web", "10.0.0.7", port, Transport::Tcp);
        let before = validate::parse_expiry("2026-12-31").expect("date");
        let after = validate::parse_expiry("2027-01-02").expect("date");

        let allowed = judge.judge(&web(80), 1, before);
        assert_eq!(allowed.verdict, Verdict::Allowed);
        assert!(allowed.alerts.is_empty());
        let refused = judge.judge(&web(81), 1, before);
        assert_eq!(refused.verdict, Verdict::Unauthorized);
        assert_eq!(refused.alerts.len(), 1);
        assert_eq!(refused.alerts[0].verdict, Some(AlertVerdict::Unauthorized));
        let expired = judge.judge(&web(80), 1, after);
        assert_eq!(expired.verdict, Verdict::ExpiredRule);
        assert_eq!(expired.alerts[0].verdict, Some(AlertVerdict::ExpiredRule));
        // A repeat within the window: the verdict, no new alert.
        let repeat = judge.judge(&web(81), 1, before);
        assert_eq!(repeat.verdict, Verdict::Unauthorized);
        assert!(repeat.alerts.is_empty());
    }

    #[test]
    fn merge_is_order_independent_and_diff_sees_the_change() {
        let a = learned(&[flow(
            Direction::Egress,
            "web",
            "10.0.0.2",
            8080,
            Transport::Tcp,
        )])
        .doc;
        let b = learned(&[
            flow(Direction::Egress, "web", "10.0.0.2", 9090, Transport::Tcp),
            flow(Direction::Egress, "app", "10.0.0.3", 5432, Transport::Tcp),
        ])
        .doc;
        let ab = tools::merge(&[a.clone(), b.clone()], "m");
        let ba = tools::merge(&[b, a.clone()], "m");
        assert_eq!(ab.to_yaml().expect("yaml"), ba.to_yaml().expect("yaml"));
        assert_eq!(ab.spec.edges.len(), 2);
        let diff = tools::diff(&a, &ab);
        assert_eq!(diff.added.len(), 1);
        assert_eq!(diff.changed.len(), 1);
        assert_eq!(diff.changed[0].ports_added, vec!["9090/tcp".to_owned()]);
        assert!(diff.removed.is_empty());
    }

    fn arb_flow() -> impl Strategy<Value = ResolvedFlow> {
        (
            prop::bool::ANY,
            prop::sample::select(vec!["web", "app", "db", "batch"]),
            prop::sample::select(vec![
                "10.0.0.1", "10.0.0.2", "10.0.1.9", "fd00::1", "fd00::2",
            ]),
            prop::sample::select(vec![22u16, 53, 80, 443, 5432, 8080]),
            prop::bool::ANY,
        )
            .prop_map(|(egress, owner, remote, port, tcp)| {
                flow(
                    if egress {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    owner,
                    remote,
                    port,
                    if tcp { Transport::Tcp } else { Transport::Udp },
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A learned baseline admits every observed edge and nothing the
        /// observation did not show; the compiled matcher agrees with a
        /// scan of every rule.
        #[test]
        fn learned_baselines_admit_exactly_what_was_observed(
            observed in prop::collection::vec(arb_flow(), 1..24),
            probes in prop::collection::vec(arb_flow(), 1..48),
        ) {
            let baseline = learned(&observed);
            let matcher = Matcher::new(Arc::new(baseline.clone()));
            let seen: std::collections::HashSet<ObservedEdge> = observed.iter().map(ObservedEdge::of).collect();
            for f in observed.iter().chain(&probes) {
                let edge = ObservedEdge::of(f);
                let verdict = matcher.judge(&edge, t0());
                prop_assert_eq!(matches!(verdict, RuleMatch::Allowed(_)), seen.contains(&edge), "{}", edge);
                prop_assert_eq!(
                    matches!(judge_linear(&baseline, &edge, t0()), RuleMatch::Allowed(_)),
                    matches!(verdict, RuleMatch::Allowed(_))
                );
            }
        }
    }
}
