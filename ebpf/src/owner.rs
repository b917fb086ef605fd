//! Stamping sockets with their owner while we are in process context.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
    programs::SockContext,
};
use eastwatch_common::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SocketOwner, counter};

use crate::maps::{SOCKET_OWNERS, count};

/// The task running this hook as a socket owner.
#[inline(always)]
pub fn current_owner() -> SocketOwner {
    SocketOwner {
        // SAFETY: no preconditions; only called from process-context hooks.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..SocketOwner::default()
    }
}

/// Whether eastwatch follows sockets of this family and protocol.
#[inline(always)]
pub fn is_tracked(family: u32, protocol: u32) -> bool {
    (family == u32::from(AF_INET) || family == u32::from(AF_INET6))
        && (protocol == u32::from(IPPROTO_TCP) || protocol == u32::from(IPPROTO_UDP))
}

/// cgroup/sock_create: the creator owns the socket (and, through
/// `BPF_F_CLONE`, every connection a listener accepts).
#[inline(always)]
pub fn stamp_new_socket(ctx: &SockContext) {
    let sk = ctx.sock;
    // SAFETY: `sk` is the program's context; these fields are readable.
    let (family, protocol) = unsafe { ((*sk).family, (*sk).protocol) };
    if !is_tracked(family, protocol) {
        return;
    }
    let mut owner = current_owner();
    if SOCKET_OWNERS.get(sk.cast(), Some(&mut owner)).is_none() {
        count(counter::SOCKET_STORAGE_FULL);
    }
}
