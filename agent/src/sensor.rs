//! The sensing half of the agent: kernel events in, enriched observations
//! out, in order.
//!
//! kernel ring buffers ─ decode ─ enrich (cgroup path, owner, netns) ─
//! tracker ─ [`Observation`]s for whoever consumes them (observe, learn,
//! monitor).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use crate::{
    cgroup::{Cgroup2Mount, CgroupRegistry},
    clock::BootClock,
    flow::{
        Direction, Flow, FlowKey, NetnsRef, Origin, Outcome, Process, ProcessSource, Transport,
    },
    kernel::{
        KernelProbe, ProbeConfig,
        counters::KernelCounters,
        decode::{self, KernelFlow},
    },
    sockets::{
        netns,
        startup::{self, ExistingConnection, ListenerTable},
    },
    tracker::{Admission, CountUpdate, FlowTracker},
};

#[derive(Debug, Clone)]
pub struct SensorConfig {
    pub probe: ProbeConfig,
    /// How often the kernel's running counts are read.
    pub count_interval: Duration,
    /// How long a removed cgroup keeps its name for late flows.
    pub cgroup_retention: Duration,
    pub max_removed_cgroups: usize,
    /// Flows unchanged for this long are forgotten (and reported as new if
    /// they come back).
    pub flow_idle: Duration,
    /// Report connections that predate the agent.
    pub scan_existing: bool,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            probe: ProbeConfig::default(),
            count_interval: Duration::from_secs(2),
            cgroup_retention: Duration::from_secs(600),
            max_removed_cgroups: 65536,
            flow_idle: Duration::from_secs(3600),
            scan_existing: true,
        }
    }
}

/// What the sensor hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A flow seen for the first time.
    Flow(Flow),
    /// More occurrences of a known flow.
    Count(CountUpdate),
    /// The kernel lost events or foldings since the last report.
    Loss(LossReport),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossReport {
    /// Each loss counter's growth since the previous report.
    pub new: BTreeMap<&'static str, u64>,
    /// Every kernel counter, per CPU.
    pub counters: KernelCounters,
}

/// How start-up went.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    pub programs: Vec<String>,
    pub cgroup2_mount: String,
    pub cgroups: usize,
    pub network_namespaces: usize,
    pub existing_connections: usize,
    pub existing_listeners: usize,
    pub scan_errors: Vec<String>,
}

/// The agent's own accounting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStats {
    pub flow_events_decoded: u64,
    pub cgroup_events_decoded: u64,
    pub decode_errors: u64,
    pub flows_recovered: u64,
    /// Edges in the kernel's flow map at the last read.
    pub flow_map_entries: u64,
    /// Time spent reading and decoding flow events.
    #[serde(serialize_with = "as_secs")]
    pub decode_time: Duration,
}

impl AgentStats {
    /// Flow events decoded per second of decoding work.
    pub fn decode_rate(&self) -> f64 {
        let secs = self.decode_time.as_secs_f64();
        if secs > 0.0 {
            self.flow_events_decoded as f64 / secs
        } else {
            0.0
        }
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Network namespace cookie → inode. The kernel notes each namespace's
/// inode before the namespace's first flow event, so even a namespace that
/// is gone by the time the event is read is named; a scan of /proc is the
/// fallback for a cookie the kernel's table no longer holds.
#[derive(Default)]
struct NetnsIndex {
    inodes: HashMap<u64, u64>,
    /// Cookies a refresh did not find, and when: retried only after a while
    /// so an unknowable namespace cannot make every event rescan /proc.
    misses: HashMap<u64, Instant>,
}

impl NetnsIndex {
    const RETRY_AFTER: Duration = Duration::from_secs(5);
    const MAX_MISSES: usize = 4096;
    /// Inodes kept here; beyond that the kernel's table is asked again.
    const MAX_INODES: usize = 65536;

    fn inode(
        &mut self,
        cookie: u64,
        kernel: &aya::maps::HashMap<MapData, u64, u32>,
    ) -> Option<u64> {
        if let Some(inode) = self.inodes.get(&cookie) {
            return Some(*inode);
        }
        if self.inodes.len() >= Self::MAX_INODES {
            self.inodes.clear();
        }
        if let Ok(inode) = kernel.get(&cookie, 0) {
            self.inodes.insert(cookie, u64::from(inode));
            return Some(u64::from(inode));
        }
        if self
            .misses
            .get(&cookie)
            .is_some_and(|at| at.elapsed() < Self::RETRY_AFTER)
        {
            return None;
        }
        self.refresh();
        let found = self.inodes.get(&cookie).copied();
        if found.is_none() {
            debug!(cookie, "network namespace not found");
            if self.misses.len() >= Self::MAX_MISSES {
                self.misses.clear();
            }
            self.misses.insert(cookie, Instant::now());
        }
        found
    }

    /// Enters every namespace to learn its cookie. Inode numbers of gone
    /// namespaces are reused, so a known inode proves nothing; cookies are
    /// never reused.
    fn refresh(&mut self) {
        for ns in netns::enumerate() {
            match netns::run_in(&ns.handle, netns::current_cookie) {
                Ok(cookie) => {
                    self.inodes.insert(cookie, ns.inode);
                }
                Err(err) => debug!(inode = ns.inode, %err, "cannot enter network namespace"),
            }
        }
    }
}

/// Whether the kernel programs may still be producing events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finality {
    Running,
    Final,
}

/// Events read per wake-up before timers get a turn.
const BATCH: usize = 8192;

pub struct Sensor {
    probe: KernelProbe,
    flow_events: AsyncFd<RingBuf<MapData>>,
    cgroup_events: AsyncFd<RingBuf<MapData>>,
    registry: CgroupRegistry,
    listeners: ListenerTable,
    netns: NetnsIndex,
    tracker: FlowTracker,
    clock: BootClock,
    tick: tokio::time::Interval,
    pending: VecDeque<Observation>,
    /// The kernel's counters at the last read: a loss report is their growth.
    last_counters: KernelCounters,
    stats: AgentStats,
    config: SensorConfig,
    diagnostics: bool,
}

impl Sensor {
    /// Loads and attaches the kernel programs, names every cgroup, and scans
    /// existing sockets. Connections older than the agent are the first
    /// observations.
    pub async fn start(config: SensorConfig) -> anyhow::Result<(Self, Startup)> {
        let mount = Cgroup2Mount::discover()?;
        let (mut probe, rings) = KernelProbe::attach(&mount.mount_point, config.probe)
            .context("loading eastwatch's eBPF programs")?;
        start_kernel_logger(&mut probe);

        let mut registry = CgroupRegistry::new(
            mount.clone(),
            config.cgroup_retention,
            config.max_removed_cgroups,
        );
        // Programs first, walk second: nothing falls between the two.
        let cgroups = registry
            .scan()
            .with_context(|| format!("walking {}", mount.mount_point.display()))?;

        let last_counters = KernelCounters::read(&probe.counters)?;
        let mut tick = tokio::time::interval(config.count_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let diagnostics = config.probe.diagnostics;
        let mut sensor = Self {
            // SAFETY: the ring buffers own their map descriptors and keep
            // them open for as long as the AsyncFd holds them.
            flow_events: unsafe { AsyncFd::register(rings.flow_events)? },
            // SAFETY: likewise for the cgroup events' ring buffer.
            cgroup_events: unsafe { AsyncFd::register(rings.cgroup_events)? },
            probe,
            registry,
            listeners: ListenerTable::default(),
            netns: NetnsIndex::default(),
            tracker: FlowTracker::default(),
            clock: BootClock::new(),
            tick,
            pending: VecDeque::new(),
            last_counters,
            stats: AgentStats::default(),
            config,
            diagnostics,
        };
        sensor.drain_cgroups();

        let mut startup = Startup {
            programs: sensor.probe.program_names(),
            cgroup2_mount: mount.mount_point.display().to_string(),
            cgroups,
            network_namespaces: 0,
            existing_connections: 0,
            existing_listeners: 0,
            scan_errors: Vec::new(),
        };
        if sensor.config.scan_existing {
            let scan = tokio::task::spawn_blocking(startup::scan)
                .await
                .context("start-up socket scan")?;
            for err in &scan.errors {
                warn!(%err, "start-up scan incomplete");
            }
            startup.network_namespaces = scan.namespaces.len();
            startup.existing_connections = scan.connections.len();
            startup.existing_listeners = scan.listeners.len();
            startup.scan_errors = scan.errors;
            sensor.netns.inodes.extend(scan.namespaces);
            sensor.listeners = scan.listeners;
            let now = Instant::now();
            for connection in scan.connections {
                let flow = sensor.existing_flow(connection);
                if let Admission::New(flow) = sensor.tracker.admit(None, flow, now) {
                    sensor.pending.push_back(Observation::Flow(*flow));
                }
            }
        }
        info!(
            programs = startup.programs.len(),
            cgroups = startup.cgroups,
            existing = startup.existing_connections,
            "sensor attached"
        );
        Ok((sensor, startup))
    }

    /// The next observations, waiting until there are some.
    pub async fn next(&mut self) -> anyhow::Result<Vec<Observation>> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.drain(..).collect());
            }
            tokio::select! {
                ready = self.flow_events.readable_mut() => {
                    let mut guard = ready?;
                    let started = Instant::now();
                    let (batch, more) = read_flows(guard.get_inner_mut(), &mut self.stats, BATCH);
                    self.stats.decode_time += started.elapsed();
                    if !more {
                        guard.clear_ready();
                    }
                    drop(guard);
                    self.admit_kernel_flows(batch);
                }
                ready = self.cgroup_events.readable_mut() => {
                    let mut guard = ready?;
                    let more = read_cgroups(guard.get_inner_mut(), &mut self.registry, &mut self.stats, BATCH);
                    if !more {
                        guard.clear_ready();
                    }
                }
                _ = self.tick.tick() => self.read_counts(Finality::Running)?,
            }
        }
    }

    /// Observations already queued (the start-up scan's), without waiting.
    pub fn take_pending(&mut self) -> Vec<Observation> {
        self.pending.drain(..).collect()
    }

    /// Detaches the kernel programs and returns everything they produced,
    /// counts included. Counters read afterwards are final and exact.
    pub fn stop(&mut self) -> anyhow::Result<Vec<Observation>> {
        self.probe.detach()?;
        self.read_counts(Finality::Final)?;
        Ok(self.pending.drain(..).collect())
    }

    /// Flips kernel diagnostics; returns the new state.
    pub fn toggle_diagnostics(&mut self) -> anyhow::Result<bool> {
        self.diagnostics = !self.diagnostics;
        self.probe.set_diagnostics(self.diagnostics)?;
        Ok(self.diagnostics)
    }

    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    pub fn counters(&self) -> anyhow::Result<KernelCounters> {
        Ok(KernelCounters::read(&self.probe.counters)?)
    }

    /// Reads every queued flow event (used before reading counts, so that
    /// in-flight events are not mistaken for lost ones).
    fn drain_flows(&mut self) {
        loop {
            let started = Instant::now();
            let (batch, more) = read_flows(self.flow_events.get_mut(), &mut self.stats, BATCH);
            self.stats.decode_time += started.elapsed();
            self.admit_kernel_flows(batch);
            if !more {
                return;
            }
        }
    }

    fn drain_cgroups(&mut self) {
        while read_cgroups(
            self.cgroup_events.get_mut(),
            &mut self.registry,
            &mut self.stats,
            BATCH,
        ) {}
    }

    fn admit_kernel_flows(&mut self, batch: Vec<KernelFlow>) {
        if batch.is_empty() {
            return;
        }
        // A cgroup's mkdir event was queued before any flow of its sockets;
        // applying the cgroup queue now names every cgroup in `batch`.
        self.drain_cgroups();
        let now = Instant::now();
        for kernel_flow in batch {
            let kernel_key = kernel_flow.key;
            let flow = self.enrich(kernel_flow);
            if let Admission::New(flow) = self.tracker.admit(Some(kernel_key), flow, now) {
                self.pending.push_back(Observation::Flow(*flow));
            }
        }
    }

    fn enrich(&mut self, event: KernelFlow) -> Flow {
        let mut owner_id = event.key.cgroup_id;
        let mut process = event.pid.map(|pid| Process {
            pid,
            name: event.comm.clone(),
            source: if event.process_from_socket {
                ProcessSource::Socket
            } else {
                ProcessSource::Hook
            },
        });
        // Accepted on a listener older than the agent: the scan knows it.
        if event.owner_unknown
            && event.key.direction == Direction::Ingress
            && let Some(holder) = self
                .listeners
                .holder(event.key.netns_cookie, event.local.port())
        {
            owner_id = holder
                .cgroup_path
                .as_deref()
                .and_then(|path| self.registry.id_of(path))
                .unwrap_or(0);
            process = Some(Process {
                pid: holder.pid,
                name: holder.comm.clone(),
                source: ProcessSource::Procfs,
            });
        }
        let netns = NetnsRef {
            cookie: event.key.netns_cookie,
            inode: self
                .netns
                .inode(event.key.netns_cookie, &self.probe.netns_inodes),
        };
        Flow {
            key: FlowKey {
                cgroup_id: owner_id,
                ..event.key
            },
            origin: Origin::Kernel,
            first_seen: self.clock.wall(event.timestamp_ns),
            local: event.local,
            remote: event.remote,
            owner: self.registry.cgroup_ref(owner_id),
            process,
            netns,
            socket_cookie: Some(event.socket_cookie),
            v4_mapped: event.v4_mapped,
            count: 1,
        }
    }

    fn existing_flow(&mut self, connection: ExistingConnection) -> Flow {
        let owner_id = connection
            .holder
            .as_ref()
            .and_then(|h| h.cgroup_path.as_deref())
            .and_then(|path| self.registry.id_of(path))
            .unwrap_or(0);
        let local = canonical(connection.local);
        let remote = canonical(connection.remote);
        Flow {
            key: FlowKey {
                cgroup_id: owner_id,
                netns_cookie: connection.netns_cookie,
                remote: remote.ip(),
                service_port: connection.service_port(),
                transport: connection.transport,
                direction: connection.direction,
                outcome: match connection.transport {
                    Transport::Tcp => Outcome::Established,
                    Transport::Udp => Outcome::Datagram,
                },
            },
            origin: Origin::Preexisting,
            first_seen: SystemTime::now(),
            local,
            remote,
            owner: self.registry.cgroup_ref(owner_id),
            process: connection.holder.map(|h| Process {
                pid: h.pid,
                name: h.comm,
                source: ProcessSource::Procfs,
            }),
            netns: NetnsRef {
                cookie: connection.netns_cookie,
                inode: Some(connection.netns_inode),
            },
            socket_cookie: Some(connection.socket_cookie),
            v4_mapped: connection.remote.ip().to_canonical() != connection.remote.ip(),
            count: 1,
        }
    }

    /// Reads the kernel's running counts and counters; queues count updates,
    /// recovered flows and losses.
    fn read_counts(&mut self, finality: Finality) -> anyhow::Result<()> {
        self.drain_flows();
        let now = Instant::now();
        let mut missing: HashMap<FlowKey, eastwatch_common::FlowStats> = HashMap::new();
        let table = self.probe.flow_table();
        let entries = table.len();
        self.stats.flow_map_entries = entries as u64;
        let fetched = now.elapsed();
        for (wire_key, stats) in table {
            let Ok(key) = decode::key(&wire_key) else {
                self.stats.decode_errors += 1;
                continue;
            };
            let last_seen = self.clock.wall(stats.last_seen_ns);
            if self.tracker.observe_count(key, stats.count, last_seen, now) {
                missing.insert(key, stats);
            }
        }
        debug!(entries, ?fetched, took = ?now.elapsed(), "read the kernel's flow table");
        let lost = match finality {
            Finality::Running => self.tracker.confirm_lost(missing.keys().copied()),
            // Detached and drained: nothing is in flight any more.
            Finality::Final => missing.keys().copied().collect(),
        };
        for key in lost {
            let Some(stats) = missing.get(&key) else {
                continue;
            };
            let flow = self.recovered_flow(key, stats);
            self.stats.flows_recovered += 1;
            if let Admission::New(flow) = self.tracker.admit(Some(key), flow, now) {
                self.pending.push_back(Observation::Flow(*flow));
            }
        }
        for update in self.tracker.take_updates() {
            self.pending.push_back(Observation::Count(update));
        }

        let counters = KernelCounters::read(&self.probe.counters)?;
        let new: BTreeMap<&'static str, u64> = counters
            .losses()
            .iter()
            .zip(self.last_counters.losses())
            .filter_map(|((name, now), (_, before))| {
                let grew = now.total.saturating_sub(before.total);
                (grew > 0).then_some((*name, grew))
            })
            .collect();
        if !new.is_empty() {
            warn!(?new, "kernel lost events");
            self.pending.push_back(Observation::Loss(LossReport {
                new,
                counters: counters.clone(),
            }));
        }
        self.last_counters = counters;

        self.registry.expire(now);
        if let Some(cutoff) = now.checked_sub(self.config.flow_idle) {
            self.tracker.prune(cutoff);
        }
        Ok(())
    }

    /// A flow whose event was lost but which the kernel's table still holds.
    fn recovered_flow(&mut self, key: FlowKey, stats: &eastwatch_common::FlowStats) -> Flow {
        let remote_port = match key.direction {
            Direction::Egress => key.service_port,
            Direction::Ingress => 0,
        };
        let local_port = match key.direction {
            Direction::Egress => 0,
            Direction::Ingress => key.service_port,
        };
        let unspecified = match key.remote {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        Flow {
            key,
            origin: Origin::Recovered,
            first_seen: self.clock.wall(stats.first_seen_ns),
            local: SocketAddr::new(unspecified, local_port),
            remote: SocketAddr::new(key.remote, remote_port),
            owner: self.registry.cgroup_ref(key.cgroup_id),
            process: None,
            netns: NetnsRef {
                cookie: key.netns_cookie,
                inode: self.netns.inode(key.netns_cookie, &self.probe.netns_inodes),
            },
            socket_cookie: None,
            v4_mapped: false,
            count: stats.count,
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Decodes up to `limit` flow events; true when more may be waiting.
fn read_flows(
    ring: &mut RingBuf<MapData>,
    stats: &mut AgentStats,
    limit: usize,
) -> (Vec<KernelFlow>, bool) {
    let mut batch = Vec::new();
    while batch.len() < limit {
        let Some(item) = ring.next() else {
            return (batch, false);
        };
        match decode::flow_event(&item) {
            Ok(flow) => {
                stats.flow_events_decoded += 1;
                batch.push(flow);
            }
            Err(err) => {
                stats.decode_errors += 1;
                warn!(%err, "undecodable flow event");
            }
        }
    }
    (batch, true)
}

/// Applies up to `limit` cgroup events; true when more may be waiting.
fn read_cgroups(
    ring: &mut RingBuf<MapData>,
    registry: &mut CgroupRegistry,
    stats: &mut AgentStats,
    limit: usize,
) -> bool {
    for _ in 0..limit {
        let Some(item) = ring.next() else {
            return false;
        };
        match decode::cgroup_event(&item) {
            Ok(change) => {
                stats.cgroup_events_decoded += 1;
                registry.apply(&change);
            }
            Err(err) => {
                stats.decode_errors += 1;
                warn!(%err, "undecodable cgroup event");
            }
        }
    }
    true
}

/// Forwards aya-log records from the kernel programs to `tracing`. They
/// only flow while diagnostics are switched on.
fn start_kernel_logger(probe: &mut KernelProbe) {
    let logger = match aya_log::EbpfLogger::init(probe.ebpf_mut()) {
        Ok(logger) => logger,
        Err(err) => {
            warn!(%err, "kernel diagnostics unavailable");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer descriptor for its lifetime.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(err) => {
            warn!(%err, "kernel diagnostics unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
