//! How `observe` prints: JSON lines for machines, one line per event for
//! people. The JSON fields are documented in the README.

use std::{
    io::{self, BufWriter, Stdout, Write},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    flow::{CgroupRef, Direction, Family, Flow, NetnsRef, Origin, Outcome, Process, Transport},
    kernel::counters::KernelCounters,
    sensor::{AgentStats, LossReport, Observation, Startup},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[derive(Serialize)]
struct Endpoint {
    address: std::net::IpAddr,
    port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self {
            address: addr.ip(),
            port: addr.port(),
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
    local: Endpoint,
    remote: Endpoint,
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
    fn new(flow: &'a Flow, timestamp: SystemTime, delta: Option<u64>) -> Self {
        Self {
            timestamp: rfc3339(timestamp),
            origin: flow.origin,
            direction: flow.key.direction,
            transport: flow.key.transport,
            family: flow.key.family(),
            outcome: flow.key.outcome,
            local: flow.local.into(),
            remote: flow.remote.into(),
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

    pub fn into_inner(self) -> W {
        self.out
    }

    fn json(&mut self, record: &Record<'_>) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    pub fn ready(&mut self, startup: &Startup) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Record::Ready {
                timestamp: rfc3339(SystemTime::now()),
                startup,
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
        self.out.flush()
    }

    pub fn observations(&mut self, observations: &[Observation]) -> io::Result<()> {
        if observations.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now();
        for observation in observations {
            match (self.format, observation) {
                (Format::Json, Observation::Flow(flow)) => {
                    self.json(&Record::Flow(FlowRecord::new(flow, flow.first_seen, None)))?
                }
                (Format::Json, Observation::Count(update)) => self.json(&Record::FlowUpdate(
                    FlowRecord::new(&update.flow, now, Some(update.delta)),
                ))?,
                (Format::Json, Observation::Loss(report)) => self.json(&Record::Loss {
                    timestamp: rfc3339(now),
                    report,
                })?,
                (Format::Text, Observation::Flow(flow)) => {
                    let line = text_line(flow, flow.first_seen, "new");
                    writeln!(self.out, "{line}")?
                }
                (Format::Text, Observation::Count(update)) => {
                    let line = text_line(&update.flow, now, "more");
                    writeln!(self.out, "{line} (+{})", update.delta)?
                }
                (Format::Text, Observation::Loss(report)) => {
                    let losses: Vec<String> =
                        report.new.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    writeln!(self.out, "{} LOST {}", rfc3339(now), losses.join(" "))?
                }
            }
        }
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

fn text_line(flow: &Flow, at: SystemTime, what: &str) -> String {
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
    format!(
        "{} {what:4} {:7} {} {:11} {} {arrow} {} cgroup={owner}{process} count={}",
        rfc3339(at),
        flow.key.direction.to_string(),
        flow.key.transport,
        flow.key.outcome.to_string(),
        flow.local,
        flow.remote,
        flow.count
    )
}
