//! What the agent may do, checked before it tries, so that a missing
//! privilege is named instead of surfacing as EPERM from deep inside aya.

use caps::{CapSet, Capability};

/// A capability and what eastwatch uses it for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    pub why: &'static str,
}

/// Without these nothing works.
pub const REQUIRED: [Need; 3] = [
    Need {
        capability: Capability::CAP_BPF,
        why: "load eBPF programs and create their maps",
    },
    Need {
        capability: Capability::CAP_PERFMON,
        why: "read kernel memory for cgroup names (raw tracepoints)",
    },
    Need {
        capability: Capability::CAP_NET_ADMIN,
        why: "attach socket programs to the cgroup v2 root",
    },
];

/// Without these the agent runs with less detail.
pub const RECOMMENDED: [Need; 3] = [
    Need {
        capability: Capability::CAP_SYS_ADMIN,
        why: "enter network namespaces to list connections older than the agent",
    },
    Need {
        capability: Capability::CAP_SYS_PTRACE,
        why: "map sockets of other users' processes to their owners",
    },
    Need {
        capability: Capability::CAP_DAC_READ_SEARCH,
        why: "name cgroups the agent missed, by id",
    },
];

/// Capabilities in `needs` that the effective set lacks.
pub fn missing(needs: &[Need]) -> Vec<Need> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    needs
        .iter()
        .filter(|need| !effective.contains(&need.capability))
        .copied()
        .collect()
}

/// An error naming every missing required capability, if any.
pub fn check(command: &str) -> anyhow::Result<()> {
    let lacking = missing(&REQUIRED);
    if lacking.is_empty() {
        for need in missing(&RECOMMENDED) {
            tracing::warn!(
                capability = %need.capability,
                "missing; eastwatch cannot {}",
                need.why
            );
        }
        return Ok(());
    }
    let names: Vec<String> = lacking.iter().map(|n| n.capability.to_string()).collect();
    let reasons: Vec<String> = lacking
        .iter()
        .map(|n| format!("  {}: to {}", n.capability, n.why))
        .collect();
    anyhow::bail!(
        "eastwatch {command} needs root or the capabilities CAP_BPF, CAP_PERFMON and \
         CAP_NET_ADMIN; missing: {}\n{}",
        names.join(", "),
        reasons.join("\n")
    )
}
