//! The flow model every stage after decoding works with.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

/// Who started the flow, seen from the socket owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The owner connected or sent to the remote end.
    Egress,
    /// The remote end connected or sent to the owner.
    Ingress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// How far a flow got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// TCP: the handshake completed.
    Established,
    /// TCP: a connect that never completed (refused, timed out, abandoned).
    /// Still a lateral path someone tried.
    Attempted,
    /// UDP: no handshake to speak of.
    Datagram,
}

/// One lateral edge as the kernel folds it: repeats of the same key are one
/// flow with a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The socket owner's cgroup v2 id; 0 when the kernel could not tell.
    pub cgroup_id: u64,
    pub netns_cookie: u64,
    pub remote: IpAddr,
    /// The remote port for egress, the local port for ingress.
    pub service_port: u16,
    pub transport: Transport,
    pub direction: Direction,
    pub outcome: Outcome,
}

impl FlowKey {
    pub fn family(&self) -> Family {
        Family::of(self.remote)
    }
}

/// Where a flow record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A kernel event for a new edge.
    Kernel,
    /// A connection that already existed when the agent started.
    Preexisting,
    /// The kernel's event was lost (ring buffer full) but its flow map still
    /// had the edge; details beyond the key are unknown.
    Recovered,
}

/// Where the process details come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessSource {
    /// The task that made the syscall the hook ran in.
    Hook,
    /// The socket's owner: the task that created or connected it (hooks that
    /// run in softirq, such as an accepted connection).
    Socket,
    /// Found from /proc at start-up (pre-existing sockets).
    Procfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    pub source: ProcessSource,
}

/// Why a cgroup has no path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupUnknown {
    /// The kernel could not attribute the socket (it predates the agent and
    /// no listener owned it).
    NoOwner,
    /// Removed before the agent could see it, and its creation was missed.
    Gone,
}

/// The owning cgroup of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupRef {
    pub id: u64,
    /// Path from the root of the cgroup v2 hierarchy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Arc<str>>,
    /// Set when `path` is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<CgroupUnknown>,
    /// The cgroup was removed after the flow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A network namespace, by the kernel's cookie and (when known) the inode
/// that `ls -l /proc/PID/ns/net` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetnsRef {
    pub cookie: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
}

/// A flow as the agent reports it: the key and what was learnt with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub key: FlowKey,
    pub origin: Origin,
    pub first_seen: SystemTime,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub owner: CgroupRef,
    pub process: Option<Process>,
    pub netns: NetnsRef,
    pub socket_cookie: Option<u64>,
    /// The application wrote the remote address as `::ffff:a.b.c.d`.
    pub v4_mapped: bool,
    /// Occurrences folded into this flow so far.
    pub count: u64,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Established => "established",
            Self::Attempted => "attempted",
            Self::Datagram => "datagram",
        })
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Flow {
    /// A flow for tests: `local` to `remote` in `direction` over
    /// `transport` (established, or a datagram), once, owned by cgroup
    /// `cgroup_id` (no path known), in network namespace 1, first seen at
    /// the epoch. Adjust the rest with struct update syntax.
    pub fn example(
        direction: Direction,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        cgroup_id: u64,
    ) -> Self {
        let service_port = match direction {
            Direction::Egress => remote.port(),
            Direction::Ingress => local.port(),
        };
        Self {
            key: FlowKey {
                cgroup_id,
                netns_cookie: 1,
                remote: remote.ip(),
                service_port,
                transport,
                direction,
                outcome: match transport {
                    Transport::Tcp => Outcome::Established,
                    Transport::Udp => Outcome::Datagram,
                },
            },
            origin: Origin::Kernel,
            first_seen: SystemTime::UNIX_EPOCH,
            local,
            remote,
            owner: CgroupRef {
                id: cgroup_id,
                path: None,
                unknown: None,
                removed: false,
            },
            process: None,
            netns: NetnsRef {
                cookie: 1,
                inode: None,
            },
            socket_cookie: None,
            v4_mapped: false,
            count: 1,
        }
    }

    /// The same flow, its owner's cgroup known as `path`.
    pub fn owned_by(mut self, path: &str) -> Self {
        self.owner.path = Some(path.into());
        self
    }
}
