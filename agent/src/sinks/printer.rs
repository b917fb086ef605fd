//! How `observe` prints: JSON lines for machines, one line per event for
//! people. docs/observe.md documents the JSON fields.

use std::{
    io::{self, BufWriter, Stdout, Write},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use eastwatch_policy::{
    flow::{CgroupRef, Direction, Family, NetnsRef, Origin, Outcome, Process, Transport},
    identity::{Identity, PodRef, ResolvedEnd, ResolvedFlow, ServiceRef},
    timestamp::rfc3339,
};
use serde::Serialize;

use crate::{
    identity::resolver::IdentityStatus,
    kernel::counters::KernelCounters,
    sensor::{AgentStats, LossReport, Startup},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Serialize)]
struct Endpoint<'a> {
    address: std::net::IpAddr,
    port: u16,
    identity: IdentityRecord<'a>,
}

impl<'a> Endpoint<'a> {
    fn new(addr: SocketAddr, end: &'a ResolvedEnd) -> Self {
        Self {
            address: addr.ip(),
            port: addr.port(),
            identity: IdentityRecord::from(end),
        }
    }
}

/// A resolved end: its canonical id, the identity's fields, and what else
/// is known.
#[derive(Serialize)]
struct IdentityRecord<'a> {
    id: String,
    #[serde(flatten)]
    identity: &'a Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a ServiceRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_backends: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unresolved: Option<&'a str>,
}

impl<'a> From<&'a ResolvedEnd> for IdentityRecord<'a> {
    fn from(end: &'a ResolvedEnd) -> Self {
        Self {
            id: end.identity.canonical(),
            identity: &end.identity,
            spiffe_id: end.spiffe_id.as_deref(),
            service: end.service.as_ref(),
            other_backends: end.other_backends.iter().map(Identity::canonical).collect(),
            pod: end.pod.as_ref(),
            container_id: end.container_id.as_deref(),
            unresolved: end.unresolved.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct FlowRecord<'a> {
    timestamp: String,
    origin: Origin,
    direction: Direction,
    transport: Transport,
    family: Family,
    outcome: Outcome,
    local: Endpoint<'a>,
    remote: Endpoint<'a>,
    service_port: u16,
    cgroup: &'a CgroupRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a Process>,
    netns: NetnsRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_cookie: Option<u64>,
    v4_mapped: bool,
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<u64>,
}

impl<'a> FlowRecord<'a> {
    fn new(resolved: &'a ResolvedFlow, timestamp: SystemTime, delta: Option<u64>) -> Self {
        let flow = &resolved.flow;
        Self {
            timestamp: rfc3339(timestamp),
            origin: flow.origin,
            direction: flow.key.direction,
            transport: flow.key.transport,
            family: flow.key.family(),
            outcome: flow.key.outcome,
            local: Endpoint::new(flow.local, &resolved.local),
            remote: Endpoint::new(flow.remote, &resolved.remote),
            service_port: flow.key.service_port,
            cgroup: &flow.owner,
            process: flow.process.as_ref(),
            netns: flow.netns,
            socket_cookie: flow.socket_cookie,
            v4_mapped: flow.v4_mapped,
            count: flow.count,
            delta,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Record<'a> {
    Ready {
        timestamp: String,
        #[serde(flatten)]
        startup: &'a Startup,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a IdentityStatus>,
    },
    /// The identity sources changed state (synced, stale, unreachable).
    Identity {
        timestamp: String,
        #[serde(flatten)]
        status: &'a IdentityStatus,
    },
    Flow(FlowRecord<'a>),
    FlowUpdate(FlowRecord<'a>),
    Loss {
        timestamp: String,
        #[serde(flatten)]
        report: &'a LossReport,
    },
    Summary {
        timestamp: String,
        duration_secs: f64,
        kernel: &'a KernelCounters,
        agent: &'a AgentStats,
        decode_rate_per_sec: f64,
    },
}

pub struct Printer<W: Write> {
    out: W,
    format: Format,
}

impl Printer<BufWriter<Stdout>> {
    pub fn stdout(format: Format) -> Self {
        Self::new(BufWriter::new(io::stdout()), format)
    }
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> Self {
        Self { out, format }
    }

    fn json(&mut self, record: &Record<'_>) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    pub fn ready(
        &mut self,
        startup: &Startup,
        identity: Option<&IdentityStatus>,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::Ready {
                timestamp: rfc3339(SystemTime::now()),
                startup,
                identity,
            })?,
            Format::Text => writeln!(
                self.out,
                "# watching: {} programs at {}, {} cgroups, {} connections and {} listeners from before start",
                startup.programs.len(),
                startup.cgroup2_mount,
                startup.cgroups,
                startup.existing_connections,
                startup.existing_listeners
            )?,
        }
        if let (Format::Text, Some(status)) = (self.format, identity) {
            writeln!(self.out, "{}", identity_text(status))?;
        }
        self.out.flush()
    }

    /// Where the identity sources stand, when that changed.
    pub fn identity(&mut self, status: &IdentityStatus) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::Identity {
                timestamp: rfc3339(SystemTime::now()),
                status,
            })?,
            Format::Text => writeln!(self.out, "{}", identity_text(status))?,
        }
        self.out.flush()
    }

    /// A flow seen for the first time.
    pub fn flow(&mut self, flow: &ResolvedFlow) -> io::Result<()> {
        let at = flow.flow.first_seen;
        match self.format {
            Format::Json => self.json(&Record::Flow(FlowRecord::new(flow, at, None))),
            Format::Text => writeln!(self.out, "{}", text_line(flow, at, "new")),
        }
    }

    /// More occurrences of a known flow, counted at `now`.
    pub fn flow_update(
        &mut self,
        flow: &ResolvedFlow,
        delta: u64,
        now: SystemTime,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::FlowUpdate(FlowRecord::new(flow, now, Some(delta)))),
            Format::Text => writeln!(self.out, "{} (+{delta})", text_line(flow, now, "more")),
        }
    }

    /// What the kernel lost, reported at `now`.
    pub fn loss(&mut self, report: &LossReport, now: SystemTime) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::Loss {
                timestamp: rfc3339(now),
                report,
            }),
            Format::Text => {
                let losses: Vec<String> =
                    report.new.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(self.out, "{} LOST {}", rfc3339(now), losses.join(" "))
            }
        }
    }

    /// Writes out what the observations of a batch printed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn summary(
        &mut self,
        elapsed: Duration,
        kernel: &KernelCounters,
        agent: &AgentStats,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::Summary {
                timestamp: rfc3339(SystemTime::now()),
                duration_secs: elapsed.as_secs_f64(),
                kernel,
                agent,
                decode_rate_per_sec: agent.decode_rate(),
            })?,
            Format::Text => writeln!(
                self.out,
                "# {:.1}s: {} flow events offered by the kernel, {} decoded, {} lost ({:.0} events/s decoded)",
                elapsed.as_secs_f64(),
                kernel.flow_events_offered.total,
                agent.flow_events_decoded,
                kernel.total_lost(),
                agent.decode_rate()
            )?,
        }
        self.out.flush()
    }
}

fn identity_text(status: &IdentityStatus) -> String {
    use crate::identity::resolver::KubernetesStatus;
    let kubernetes = match &status.kubernetes {
        KubernetesStatus::Off { reason } => format!("kubernetes off ({reason})"),
        KubernetesStatus::On { source, resources } => {
            let states: Vec<String> = resources
                .iter()
                .map(|(name, r)| {
                    let state = serde_json::to_value(&r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!("{name}={state}/{}", r.objects)
                })
                .collect();
            format!("kubernetes from {source}: {}", states.join(" "))
        }
    };
    let inventory = status
        .inventory
        .as_ref()
        .map(|i| format!(", inventory {} ({} workloads)", i.path, i.workloads))
        .unwrap_or_default();
    format!(
        "# identity: cluster {} node {}, {kubernetes}{inventory}",
        status.cluster, status.node
    )
}

fn end_text(end: &ResolvedEnd) -> String {
    let mut text = end.identity.canonical();
    if let Some(service) = &end.service {
        text.push_str(&format!(
            " via service {}/{}",
            service.namespace, service.name
        ));
    }
    if let Some(why) = &end.unresolved {
        text.push_str(&format!(" ({why})"));
    }
    text
}

fn text_line(resolved: &ResolvedFlow, at: SystemTime, what: &str) -> String {
    let flow = &resolved.flow;
    let owner = match (&flow.owner.path, flow.owner.unknown) {
        (Some(path), _) => path.to_string(),
        (None, Some(reason)) => format!("unknown:{reason:?}"),
        (None, None) => "unknown".to_owned(),
    };
    let process = flow
        .process
        .as_ref()
        .map(|p| format!(" pid={} {}", p.pid, p.name))
        .unwrap_or_default();
    let arrow = match flow.key.direction {
        Direction::Egress => "->",
        Direction::Ingress => "<-",
    };
    let identities = format!(
        " | {} {arrow} {}",
        end_text(&resolved.local),
        end_text(&resolved.remote)
    );
    format!(
        "{} {what:4} {:7} {} {:11} {} {arrow} {} cgroup={owner}{process} count={}{identities}",
        rfc3339(at),
        flow.key.direction.to_string(),
        flow.key.transport,
        flow.key.outcome.to_string(),
        flow.local,
        flow.remote,
        flow.count
    )
}
