//! Folding repeats in the kernel and sending only new edges to the agent.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
};
use eastwatch_common::{
    AF_INET6, COMM_LEN, FLAG_V4_MAPPED, FlowEvent, FlowKey, FlowStats, counter,
};

use crate::maps::{FLOW_EVENTS, FLOWS, add, count};

const EEXIST: i64 = 17;

/// An IP address as four big-endian words, IPv4 in word 0.
#[derive(Clone, Copy)]
pub struct Addr {
    pub family: u8,
    pub words: [u32; 4],
}

/// `::ffff:0:0/96` in network order, seen as a little-endian word.
const V4_MAPPED_PREFIX: u32 = 0xffff_u32.to_be();

impl Addr {
    #[inline(always)]
    pub fn v4(addr: u32) -> Self {
        Self {
            family: eastwatch_common::AF_INET,
            words: [addr, 0, 0, 0],
        }
    }

    /// An IPv6 address; v4-mapped ones become the IPv4 address they carry,
    /// so both spellings of one peer fold into one edge.
    #[inline(always)]
    pub fn v6(words: [u32; 4]) -> (Self, u16) {
        if words[0] == 0 && words[1] == 0 && words[2] == V4_MAPPED_PREFIX {
            (Self::v4(words[3]), FLAG_V4_MAPPED)
        } else {
            (
                Self {
                    family: AF_INET6,
                    words,
                },
                0,
            )
        }
    }
}

/// Everything about one occurrence that is not part of its key.
pub struct Occurrence {
    pub local: Addr,
    pub local_port: u16,
    pub remote_port: u16,
    pub pid_tgid: u64,
    pub comm: [u8; COMM_LEN],
    pub flags: u16,
    /// The socket (null if unknown), to read its network namespace from.
    pub socket: *const c_void,
}

/// The parts of a [`FlowKey`] a hook knows.
pub struct Edge {
    pub cgroup_id: u64,
    pub remote: Addr,
    pub service_port: u16,
    pub transport: u8,
    pub direction: u8,
    pub outcome: u8,
}

/// Counts one occurrence of `edge`; the first one of a key also goes to the
/// agent with its details. A repeat costs one map lookup: `admit` (which
/// gathers the details, and may decide the occurrence is not a flow of its
/// own) only runs when the key is new.
#[inline(always)]
pub fn record<C: EbpfContext>(ctx: &C, edge: Edge, admit: impl FnOnce() -> Option<Occurrence>) {
    let ctx_ptr = ctx.as_ptr();
    // SAFETY: every hook that calls this has a context these helpers accept.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx_ptr) };
    let key = FlowKey {
        cgroup_id: edge.cgroup_id,
        netns_cookie,
        remote_addr: edge.remote.words,
        service_port: edge.service_port,
        family: edge.remote.family,
        transport: edge.transport,
        direction: edge.direction,
        outcome: edge.outcome,
        _pad: [0; 2],
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if fold(&key, now) {
        return;
    }
    let Some(occurrence) = admit() else {
        return;
    };
    let fresh = FlowStats {
        count: 1,
        first_seen_ns: now,
        last_seen_ns: now,
    };
    match FLOWS.insert(&key, &fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU inserted the same key between our lookup and insert.
        Err(err) if i64::from(err) == -EEXIST && fold(&key, now) => return,
        // Not folded; still tell the agent, it keeps its own totals.
        Err(_) => count(counter::FLOW_MAP_FULL),
    }
    // Before the event: the agent may look the namespace up as soon as it
    // reads it.
    crate::netns::remember(netns_cookie, occurrence.socket);
    // SAFETY: as above.
    let socket_cookie = unsafe { bpf_get_socket_cookie(ctx_ptr) };
    emit(&key, now, socket_cookie, &occurrence);
    if crate::maps::diagnostics_enabled() {
        aya_log_ebpf::info!(
            ctx,
            "new flow cgroup={} dir={} port={} outcome={}",
            key.cgroup_id,
            key.direction,
            key.service_port,
            key.outcome
        );
    }
}

/// Adds one to an existing key's totals; false when the key is absent.
#[inline(always)]
fn fold(key: &FlowKey, now: u64) -> bool {
    let Some(stats) = FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: `stats` points at a live map value; count is an aligned u64.
    unsafe {
        add(core::ptr::addr_of_mut!((*stats).count), 1);
        (*stats).last_seen_ns = now;
    }
    true
}

#[inline(always)]
fn emit(key: &FlowKey, now: u64, socket_cookie: u64, occurrence: &Occurrence) {
    count(counter::FLOW_EVENTS_OFFERED);
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        count(counter::FLOW_RINGBUF_FULL);
        return;
    };
    entry.write(FlowEvent {
        key: *key,
        timestamp_ns: now,
        socket_cookie,
        pid_tgid: occurrence.pid_tgid,
        local_addr: occurrence.local.words,
        local_port: occurrence.local_port,
        remote_port: occurrence.remote_port,
        flags: occurrence.flags,
        _pad: [0; 2],
        comm: occurrence.comm,
    });
    entry.submit(0);
}
