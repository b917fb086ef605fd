//! The wire format between eastwatch's eBPF programs and its agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel
//! and userspace agree on the layout byte for byte. Fields hold raw numbers
//! (kernel constants); the agent validates them when it decodes an event and
//! never transmutes them into enums.
#![no_std]

/// `AF_INET` as the kernel numbers it.
pub const AF_INET: u8 = 2;
/// `AF_INET6` as the kernel numbers it.
pub const AF_INET6: u8 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;

/// `FlowKey::direction`: the socket owner initiated the flow.
pub const DIRECTION_EGRESS: u8 = 1;
/// `FlowKey::direction`: a peer initiated the flow towards the socket owner.
pub const DIRECTION_INGRESS: u8 = 2;

/// `FlowKey::outcome`: a TCP handshake completed.
pub const OUTCOME_ESTABLISHED: u8 = 1;
/// `FlowKey::outcome`: a TCP connect that never completed (refused, timed out
/// or abandoned).
pub const OUTCOME_ATTEMPTED: u8 = 2;
/// `FlowKey::outcome`: UDP, which has no handshake.
pub const OUTCOME_DATAGRAM: u8 = 3;

/// `FlowEvent::flags`: pid and comm come from the socket's owner stamp (the
/// process that created or connected it), not from the task the hook ran in.
pub const FLAG_PROCESS_FROM_SOCKET: u16 = 1 << 0;
/// `FlowEvent::flags`: the socket had no owner stamp (it predates the
/// agent); `cgroup_id` is 0 and the agent resolves the owner itself.
pub const FLAG_OWNER_UNKNOWN: u16 = 1 << 1;
/// `FlowEvent::flags`: the application used a v4-mapped IPv6 address; the
/// key holds the plain IPv4 address.
pub const FLAG_V4_MAPPED: u16 = 1 << 2;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// What the kernel folds repeats on: one entry per lateral edge.
///
/// Addresses are four big-endian 32-bit words as the kernel stores them; an
/// IPv4 address is in word 0 and the rest are zero. `service_port` is the
/// remote port for egress and the local port for ingress, in host order, so
/// ephemeral client ports never split an edge.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub cgroup_id: u64,
    pub netns_cookie: u64,
    pub remote_addr: [u32; 4],
    pub service_port: u16,
    pub family: u8,
    pub transport: u8,
    pub direction: u8,
    pub outcome: u8,
    pub _pad: [u8; 2],
}

/// The kernel's running totals for one [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Occurrences since the key entered the map, the first included.
    pub count: u64,
    /// `bpf_ktime_get_boot_ns` of the first occurrence.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_boot_ns` of the latest occurrence.
    pub last_seen_ns: u64,
}

/// Sent once per new [`FlowKey`] on the flow ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEvent {
    pub key: FlowKey,
    pub timestamp_ns: u64,
    pub socket_cookie: u64,
    /// `bpf_get_current_pid_tgid` layout: tgid in the high half. 0 = unknown.
    pub pid_tgid: u64,
    pub local_addr: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub flags: u16,
    pub _pad: [u8; 2],
    pub comm: [u8; COMM_LEN],
}

/// Who owns a socket, stamped into socket-local storage at creation (and
/// cloned from a listener into every socket it accepts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SocketOwner {
    pub cgroup_id: u64,
    pub pid_tgid: u64,
    pub comm: [u8; COMM_LEN],
    /// The destination as the application asked for it in `connect()`,
    /// before any DNAT or socket-level load balancing.
    pub connect_addr: [u32; 4],
    pub connect_port: u16,
    /// 0 until `connect()` was seen.
    pub connect_family: u8,
    /// 1 once this UDP socket sent a datagram to a peer before hearing from
    /// it: proof, for a local peer's reply check, that the socket asked.
    pub udp_sent_first: u8,
    /// `FLAG_*` bits that describe the connect address (e.g. v4-mapped).
    pub connect_flags: u16,
    pub _pad1: [u8; 2],
}

/// A UDP socket and one peer it exchanged datagrams with. The direction of
/// the first datagram between them is the flow's; datagrams the other way
/// are replies and belong to that flow, once the peer is known to have
/// asked (see `UDP_ANSWERING`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UdpPeer {
    pub socket_cookie: u64,
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub _pad: [u8; 5],
}

/// `UDP_PEERS` value: the peer sent first and its datagram was checked to
/// be a request (a local socket that sent first, or a remote peer on an
/// ephemeral port): this socket's sends to it are replies. The other
/// values are `DIRECTION_EGRESS` or `DIRECTION_INGRESS`, whichever came
/// first.
pub const UDP_ANSWERING: u32 = 3;

/// `CgroupEvent::kind`: a cgroup directory was created.
pub const CGROUP_MKDIR: u8 = 1;
/// `CgroupEvent::kind`: a cgroup directory was removed.
pub const CGROUP_RMDIR: u8 = 2;

/// Room for a cgroup path; longer ones arrive truncated and flagged.
pub const CGROUP_PATH_LEN: usize = 1024;

/// A cgroup v2 directory appeared or went away.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub cgroup_id: u64,
    pub timestamp_ns: u64,
    /// Bytes of `path` in use, without the trailing NUL.
    pub path_len: u32,
    pub kind: u8,
    pub truncated: u8,
    pub _pad: [u8; 2],
    /// Path from the root of the cgroup v2 hierarchy, e.g. `/system.slice`.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// Indexes of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Flow events the kernel tried to send.
    pub const FLOW_EVENTS_OFFERED: u32 = 0;
    /// Flow events dropped because the ring buffer was full.
    pub const FLOW_RINGBUF_FULL: u32 = 1;
    /// Occurrences not folded because the flow map refused an insert.
    pub const FLOW_MAP_FULL: u32 = 2;
    /// Sockets whose owner could not be stamped (storage allocation failed).
    pub const SOCKET_STORAGE_FULL: u32 = 3;
    /// Cgroup events the kernel tried to send.
    pub const CGROUP_EVENTS_OFFERED: u32 = 4;
    /// Cgroup events dropped because their ring buffer was full.
    pub const CGROUP_RINGBUF_FULL: u32 = 5;
    /// Cgroup events whose fields could not be read from the kernel.
    pub const CGROUP_READ_FAILED: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Indexes into the `SETTINGS` array map, writable at run time.
pub mod setting {
    /// Non-zero: emit aya-log diagnostics from the kernel programs.
    pub const DIAGNOSTICS: u32 = 0;
    /// Number of settings.
    pub const COUNT: u32 = 1;
}

/// Names shared by the object file and the loader.
pub mod names {
    pub const FLOWS: &str = "FLOWS";
    pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
    pub const CGROUP_EVENTS: &str = "CGROUP_EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SETTINGS: &str = "SETTINGS";
    pub const SOCKET_OWNERS: &str = "SOCKET_OWNERS";
    pub const UDP_PEERS: &str = "UDP_PEERS";
    pub const NETNS_INODES: &str = "NETNS_INODES";

    /// Globals the loader fills with struct offsets read from kernel BTF.
    pub const CGROUP_KN_OFFSET: &str = "CGROUP_KN_OFFSET";
    pub const CGROUP_ROOT_OFFSET: &str = "CGROUP_ROOT_OFFSET";
    pub const KERNFS_NODE_ID_OFFSET: &str = "KERNFS_NODE_ID_OFFSET";
    pub const CGROUP_ROOT_HIERARCHY_ID_OFFSET: &str = "CGROUP_ROOT_HIERARCHY_ID_OFFSET";
    pub const SOCK_NET_OFFSET: &str = "SOCK_NET_OFFSET";
    pub const NET_INUM_OFFSET: &str = "NET_INUM_OFFSET";
    /// The host's ephemeral port range (`ip_local_port_range`).
    pub const EPHEMERAL_PORT_FIRST: &str = "EPHEMERAL_PORT_FIRST";
    pub const EPHEMERAL_PORT_LAST: &str = "EPHEMERAL_PORT_LAST";
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for FlowEvent {}
    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for SocketOwner {}
    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for CgroupEvent {}
    // SAFETY: repr(C) of integers, integer arrays and explicit padding:
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for UdpPeer {}
}

// The layouts are part of the wire format: a change here is a change there.
const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<FlowStats>() == 24);
    assert!(core::mem::size_of::<FlowEvent>() == 104);
    assert!(core::mem::size_of::<SocketOwner>() == 56);
    assert!(core::mem::size_of::<UdpPeer>() == 32);
    assert!(core::mem::size_of::<CgroupEvent>() == 24 + CGROUP_PATH_LEN);
};
