//! Which rule allows a path, or the nearest rules and why they do not.

use std::{collections::BTreeMap, net::IpAddr, path::Path, sync::Arc, time::SystemTime};

use serde::Serialize;

use super::{ToolError, load_valid};
use crate::{
    baseline::{
        matcher::{Matcher, ObservedEdge, RuleMatch, Verdict, mismatches, nearest},
        validate::{Baseline, PortRange},
    },
    identity::{ContainerRuntime, Identity, Workload, WorkloadKind},
};

/// Parses an identity's canonical text (`workload:ns/kind/name`,
/// `cgroup:/path`, `systemd:unit`, `container:runtime/name`, `node:name`,
/// `external:addr`, or a bare address).
pub fn parse_identity(text: &str) -> Result<Identity, String> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(Identity::External {
            address: address.to_canonical(),
        });
    }
    let Some((kind, rest)) = text.split_once(':') else {
        return Err(format!(
            "{text:?} is not an identity: workload:NS/KIND/NAME, cgroup:PATH, systemd:UNIT, container:RUNTIME/NAME, node:NAME or external:ADDRESS"
        ));
    };
    Ok(match kind {
        "workload" => {
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            let [namespace, kind, name] = parts.as_slice() else {
                return Err(format!("{text:?}: a workload is workload:NS/KIND/NAME"));
            };
            Identity::Workload(Workload {
                cluster: String::new(),
                namespace: namespace.to_string(),
                kind: WorkloadKind::parse(kind),
                name: name.to_string(),
                service_account: String::new(),
                labels: BTreeMap::new(),
            })
        }
        "cgroup" => Identity::Cgroup {
            path: rest.to_owned(),
        },
        "systemd" => Identity::SystemdUnit {
            unit: rest.to_owned(),
        },
        "node" => Identity::Node {
            name: rest.to_owned(),
        },
        "external" => Identity::External {
            address: rest
                .parse::<IpAddr>()
                .map_err(|_| format!("{rest:?} is not an IP address"))?
                .to_canonical(),
        },
        "container" => {
            let (runtime, name) = rest
                .split_once('/')
                .ok_or_else(|| format!("{text:?}: a container is container:RUNTIME/NAME"))?;
            let runtime = match runtime {
                "containerd" => ContainerRuntime::Containerd,
                "crio" => ContainerRuntime::Crio,
                "docker" => ContainerRuntime::Docker,
                "podman" => ContainerRuntime::Podman,
                other => return Err(format!("unknown container runtime {other:?}")),
            };
            Identity::Container {
                runtime,
                id: name.to_owned(),
                name: Some(name.to_owned()),
            }
        }
        other => return Err(format!("unknown identity kind {other:?}")),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub edge: String,
    pub verdict: Verdict,
    /// The rule that allows it (or, for `expired-rule`, would).
    pub rule: Option<String>,
    /// Otherwise the nearest rules and why each does not allow it.
    pub nearest: Vec<NearRule>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NearRule {
    pub rule: String,
    pub reasons: Vec<String>,
}

pub fn explain(baseline: &Baseline, edge: &ObservedEdge, now: SystemTime) -> Explanation {
    let matcher = Matcher::new(Arc::new(baseline.clone()));
    let verdict = matcher.judge(edge, now);
    let rule = match verdict {
        RuleMatch::Allowed(i) | RuleMatch::Expired(i) => Some(baseline.rules[i].label()),
        RuleMatch::Unauthorized => None,
    };
    let near = match verdict {
        RuleMatch::Allowed(_) => Vec::new(),
        RuleMatch::Expired(i) => vec![NearRule {
            rule: baseline.rules[i].label(),
            reasons: mismatches(&baseline.rules[i], edge, now),
        }],
        RuleMatch::Unauthorized => nearest(baseline, edge, now, 3)
            .into_iter()
            .map(|(rule, reasons)| NearRule {
                rule: rule.label(),
                reasons,
            })
            .collect(),
    };
    Explanation {
        edge: edge.to_string(),
        verdict: verdict.verdict(),
        rule,
        nearest: near,
    }
}

pub fn explanation_text(e: &Explanation) -> String {
    let mut out = format!("{}: {}\n", e.edge, e.verdict.as_str());
    if let Some(rule) = &e.rule {
        out.push_str(&format!("  rule: {rule}\n"));
    }
    if e.verdict == Verdict::Unauthorized && e.nearest.is_empty() {
        out.push_str("  no rule names either end\n");
    }
    for near in &e.nearest {
        out.push_str(&format!("  nearest: {}\n", near.rule));
        for reason in &near.reasons {
            out.push_str(&format!("    - {reason}\n"));
        }
    }
    out
}

/// [`explain`] for the path `from` → `to` on `port` (`PORT/tcp`) under the
/// baseline in `file`, each as the command line gives it.
pub fn explain_path(
    file: &Path,
    from: &str,
    to: &str,
    port: &str,
    now: SystemTime,
) -> Result<Explanation, ToolError> {
    let baseline = load_valid(file, now)?;
    let range = PortRange::parse(port).map_err(|e| ToolError::Argument(format!("--port: {e}")))?;
    if range.first != range.last {
        return Err(ToolError::Argument(
            "--port names one port, e.g. 5432/tcp".into(),
        ));
    }
    let identity = |flag: &str, text: &str| {
        parse_identity(text).map_err(|e| ToolError::Argument(format!("{flag}: {e}")))
    };
    let edge = ObservedEdge {
        from: identity("--from", from)?,
        to: identity("--to", to)?,
        port: range.first,
        transport: range.transport,
    };
    Ok(explain(&baseline, &edge, now))
}
