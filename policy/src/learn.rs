//! Learn mode: aggregate observed flows into edges at identity granularity
//! (replicas are one identity, client ports are folded by the kernel into
//! the service port), write them as a deterministic baseline, keep the
//! evidence apart, and checkpoint so a restart resumes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    baseline::{
        format::{BaselineDoc, Edge, Located},
        matcher::ObservedEdge,
        selector::exact_selector,
    },
    flow::{Direction, Outcome, Transport},
    identity::{Identity, ResolvedEnd, ResolvedFlow},
    timestamp::{rfc3339_serde, rfc3339_serde_opt},
};

/// Client, server and the ports between them.
type Ends = (Identity, Identity, BTreeSet<(Transport, u16)>);

/// Samples kept per edge and end.
const SAMPLES: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeEvidence {
    pub from: Identity,
    pub to: Identity,
    pub port: u16,
    pub transport: Transport,
    #[serde(with = "rfc3339_serde")]
    pub first_seen: SystemTime,
    #[serde(with = "rfc3339_serde")]
    pub last_seen: SystemTime,
    /// Occurrences (connections, datagrams) over every observation.
    pub count: u64,
    /// Occurrences that were only attempts (TCP connects that never
    /// completed): an edge with nothing else was never seen working.
    #[serde(default)]
    pub attempts: u64,
    /// Flows seen from the client's side (egress) and the server's (ingress).
    pub egress_observations: u64,
    pub ingress_observations: u64,
    pub from_pods: BTreeSet<String>,
    pub to_pods: BTreeSet<String>,
    pub from_processes: BTreeSet<String>,
    pub to_processes: BTreeSet<String>,
}

impl EdgeEvidence {
    /// Evidence of an edge first seen at `first_seen`, before anything is
    /// counted.
    fn first(edge: &ObservedEdge, first_seen: SystemTime, now: SystemTime) -> Self {
        Self {
            from: edge.from.clone(),
            to: edge.to.clone(),
            port: edge.port,
            transport: edge.transport,
            first_seen,
            last_seen: now,
            count: 0,
            attempts: 0,
            egress_observations: 0,
            ingress_observations: 0,
            from_pods: BTreeSet::new(),
            to_pods: BTreeSet::new(),
            from_processes: BTreeSet::new(),
            to_processes: BTreeSet::new(),
        }
    }

    /// Counts `count` occurrences of `flow` and samples its pods and the
    /// local process.
    fn add(&mut self, flow: &ResolvedFlow, count: u64, now: SystemTime) {
        self.count += count;
        if flow.flow.key.outcome == Outcome::Attempted {
            self.attempts += count;
        }
        self.last_seen = self.last_seen.max(now);
        let egress = flow.flow.key.direction == Direction::Egress;
        if egress {
            self.egress_observations += 1;
        } else {
            self.ingress_observations += 1;
        }
        let pod = |end: &ResolvedEnd| {
            end.pod
                .as_ref()
                .map(|p| format!("{}/{}", p.namespace, p.name))
        };
        sample(&mut self.from_pods, pod(flow.client().end));
        sample(&mut self.to_pods, pod(flow.server().end));
        let process = flow.flow.process.as_ref().map(|p| p.name.clone());
        if egress {
            sample(&mut self.from_processes, process);
        } else {
            sample(&mut self.to_processes, process);
        }
    }
}

/// Keeps `value` while `set` holds fewer than [`SAMPLES`].
fn sample(set: &mut BTreeSet<String>, value: Option<String>) {
    if let Some(value) = value
        && set.len() < SAMPLES
    {
        set.insert(value);
    }
}

/// What a restart resumes from (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    #[serde(with = "rfc3339_serde")]
    pub started: SystemTime,
    #[serde(with = "rfc3339_serde_opt")]
    pub last_new_edge: Option<SystemTime>,
    pub unattributed: u64,
    pub edges: Vec<EdgeEvidence>,
}

#[derive(Debug, Clone)]
pub struct Learner {
    edges: BTreeMap<ObservedEdge, EdgeEvidence>,
    started: SystemTime,
    last_new_edge: Option<SystemTime>,
    /// Flows with an end no baseline can name (unknown cgroup, say).
    unattributed: u64,
}

impl Learner {
    pub fn new(now: SystemTime) -> Self {
        Self {
            edges: BTreeMap::new(),
            started: now,
            last_new_edge: None,
            unattributed: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Takes in `count` occurrences of a flow; returns the edge when it is
    /// new.
    pub fn observe(
        &mut self,
        flow: &ResolvedFlow,
        count: u64,
        now: SystemTime,
    ) -> Option<ObservedEdge> {
        let edge = ObservedEdge::of(flow);
        // Port 0 is no service (an unbound send); a baseline cannot name it.
        if edge.port == 0
            || exact_selector(&edge.from).is_none()
            || exact_selector(&edge.to).is_none()
        {
            self.unattributed += count;
            return None;
        }
        let mut new = false;
        let evidence = self.edges.entry(edge.clone()).or_insert_with(|| {
            new = true;
            EdgeEvidence::first(&edge, flow.flow.first_seen.min(now), now)
        });
        evidence.add(flow, count, now);
        if new {
            self.last_new_edge = Some(now);
            Some(edge)
        } else {
            None
        }
    }

    /// Time since the last new edge (since the start when there was none).
    pub fn converged_for(&self, now: SystemTime) -> Duration {
        now.duration_since(self.last_new_edge.unwrap_or(self.started))
            .unwrap_or_default()
    }

    /// The learned baseline: one edge per (client, server) with every port
    /// seen, sorted; no timestamps, no counts, so two runs that saw the
    /// same paths write the same bytes.
    pub fn baseline(&self, name: &str) -> BaselineDoc {
        let mut grouped: BTreeMap<(String, String), Ends> = BTreeMap::new();
        for edge in self.edges.keys() {
            let entry = grouped
                .entry((edge.from.canonical(), edge.to.canonical()))
                .or_insert_with(|| (edge.from.clone(), edge.to.clone(), BTreeSet::new()));
            entry.2.insert((edge.transport, edge.port));
        }
        let mut doc = BaselineDoc::new(name);
        for (from, to, ports) in grouped.into_values() {
            let (Some(from), Some(to)) = (exact_selector(&from), exact_selector(&to)) else {
                continue;
            };
            doc.spec.edges.push(Located::new(Edge {
                from: Located::new(from),
                to: Located::new(to),
                ports: Located::new(
                    ports
                        .into_iter()
                        .map(|(transport, port)| Located::new(format!("{port}/{transport}")))
                        .collect(),
                ),
                reason: None,
                owner: None,
                expires: None,
            }));
        }
        doc
    }

    /// The evidence behind the learned edges, sorted like the baseline.
    pub fn evidence(&self, now: SystemTime) -> Evidence {
        Evidence {
            started: self.started,
            last_new_edge: self.last_new_edge,
            converged_for_secs: self.converged_for(now).as_secs(),
            unattributed_flows: self.unattributed,
            edges: self.edges.values().cloned().collect(),
        }
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            version: 1,
            started: self.started,
            last_new_edge: self.last_new_edge,
            unattributed: self.unattributed,
            edges: self.edges.values().cloned().collect(),
        }
    }

    pub fn resume(checkpoint: Checkpoint) -> Self {
        Self {
            edges: checkpoint
                .edges
                .into_iter()
                .map(|e| {
                    let key = ObservedEdge {
                        from: e.from.clone(),
                        to: e.to.clone(),
                        port: e.port,
                        transport: e.transport,
                    };
                    (key, e)
                })
                .collect(),
            started: checkpoint.started,
            last_new_edge: checkpoint.last_new_edge,
            unattributed: checkpoint.unattributed,
        }
    }

    /// Resumes from `path` when it exists, else starts afresh.
    pub fn load_or_new(path: Option<&Path>, now: SystemTime) -> Result<Self, CheckpointError> {
        let Some(path) = path else {
            return Ok(Self::new(now));
        };
        match crate::file::read_bounded(path, crate::file::MAX_INPUT_BYTES) {
            Ok(bytes) => {
                let checkpoint: Checkpoint =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse {
                        path: path.to_owned(),
                        source,
                    })?;
                if checkpoint.version != 1 {
                    return Err(CheckpointError::Version {
                        path: path.to_owned(),
                        version: checkpoint.version,
                    });
                }
                Ok(Self::resume(checkpoint))
            }
            Err(err) if err.is_not_found() => Ok(Self::new(now)),
            Err(source) => Err(CheckpointError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(with = "rfc3339_serde")]
    pub started: SystemTime,
    #[serde(with = "rfc3339_serde_opt")]
    pub last_new_edge: Option<SystemTime>,
    pub converged_for_secs: u64,
    pub unattributed_flows: u64,
    pub edges: Vec<EdgeEvidence>,
}

/// A checkpoint that cannot be resumed from.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: crate::file::ReadError,
    },
    #[error("reading checkpoint {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {} has version {version}; this eastwatch reads version 1", path.display())]
    Version { path: PathBuf, version: u32 },
}
