//! sock_ops: TCP outcomes. Passive (and often active) establishment runs in
//! softirq, where the current task and cgroup belong to whoever happened to
//! be on the CPU, so the owner always comes from socket storage.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_TCP_CLOSE, BPF_TCP_SYN_SENT, bpf_sock,
    },
    programs::SockOpsContext,
};
use eastwatch_common::{
    AF_INET, DIRECTION_EGRESS, DIRECTION_INGRESS, FLAG_OWNER_UNKNOWN, FLAG_PROCESS_FROM_SOCKET,
    IPPROTO_TCP, OUTCOME_ATTEMPTED, OUTCOME_ESTABLISHED, SocketOwner,
};

use crate::{
    flow::{Addr, Edge, Occurrence, record},
    maps::SOCKET_OWNERS,
};

#[inline(always)]
pub fn on_sock_ops(ctx: &SockOpsContext) {
    match ctx.op() {
        // Ask for state changes on outbound sockets so a connect that never
        // completes is still reported.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => report(ctx, DIRECTION_EGRESS, OUTCOME_ESTABLISHED),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => report(ctx, DIRECTION_INGRESS, OUTCOME_ESTABLISHED),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(0) == BPF_TCP_SYN_SENT && ctx.arg(1) == BPF_TCP_CLOSE => {
            report(ctx, DIRECTION_EGRESS, OUTCOME_ATTEMPTED);
        }
        _ => {}
    }
}

/// Local and remote ends as the socket sees them, ports in host order.
#[inline(always)]
fn socket_ends(ctx: &SockOpsContext) -> (Addr, u16, Addr, u16) {
    let ops = ctx.ops;
    // SAFETY: readable context fields, loaded 32 bits at a time.
    unsafe {
        let local_port = read_volatile(addr_of!((*ops).local_port)) as u16;
        // remote_port holds the network-order port in its high half.
        let remote_port = u32::from_be(read_volatile(addr_of!((*ops).remote_port))) as u16;
        if read_volatile(addr_of!((*ops).family)) == u32::from(AF_INET) {
            (
                Addr::v4(read_volatile(addr_of!((*ops).local_ip4))),
                local_port,
                Addr::v4(read_volatile(addr_of!((*ops).remote_ip4))),
                remote_port,
            )
        } else {
            let local = [
                read_volatile(addr_of!((*ops).local_ip6[0])),
                read_volatile(addr_of!((*ops).local_ip6[1])),
                read_volatile(addr_of!((*ops).local_ip6[2])),
                read_volatile(addr_of!((*ops).local_ip6[3])),
            ];
            let remote = [
                read_volatile(addr_of!((*ops).remote_ip6[0])),
                read_volatile(addr_of!((*ops).remote_ip6[1])),
                read_volatile(addr_of!((*ops).remote_ip6[2])),
                read_volatile(addr_of!((*ops).remote_ip6[3])),
            ];
            (
                Addr::v6(local).0,
                local_port,
                Addr::v6(remote).0,
                remote_port,
            )
        }
    }
}

/// The socket, null unless a full socket.
#[inline(always)]
fn socket(ctx: &SockOpsContext) -> *mut bpf_sock {
    // SAFETY: `sk` is a readable context field.
    unsafe { read_volatile(addr_of!((*ctx.ops).__bindgen_anon_2.sk)) }
}

/// The socket's owner stamp, copied out of storage.
#[inline(always)]
fn owner(sk: *mut bpf_sock) -> Option<SocketOwner> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: storage pointers stay valid for the program's run.
    SOCKET_OWNERS
        .get(sk.cast(), None)
        .map(|owner| unsafe { *owner })
}

#[inline(always)]
fn report(ctx: &SockOpsContext, direction: u8, outcome: u8) {
    let (local, local_port, mut remote, mut remote_port) = socket_ends(ctx);
    let mut flags = FLAG_PROCESS_FROM_SOCKET;
    let sk = socket(ctx);
    let owner = match owner(sk) {
        Some(owner) => owner,
        None => {
            flags |= FLAG_OWNER_UNKNOWN;
            SocketOwner::default()
        }
    };
    // Outbound: judge the destination the application asked for (a Service
    // address, say), not what a socket-level balancer rewrote it to.
    if direction == DIRECTION_EGRESS && owner.connect_family != 0 {
        remote = Addr {
            family: owner.connect_family,
            words: owner.connect_addr,
        };
        remote_port = owner.connect_port;
        flags |= owner.connect_flags;
    }
    let service_port = if direction == DIRECTION_EGRESS {
        remote_port
    } else {
        local_port
    };
    record(
        ctx,
        Edge {
            cgroup_id: owner.cgroup_id,
            remote,
            service_port,
            transport: IPPROTO_TCP,
            direction,
            outcome,
        },
        || {
            Some(Occurrence {
                local,
                local_port,
                remote_port,
                pid_tgid: owner.pid_tgid,
                comm: owner.comm,
                flags,
                socket: sk.cast_const().cast(),
            })
        },
    );
}
