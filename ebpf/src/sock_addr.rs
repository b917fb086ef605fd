//! cgroup/connect*, sendmsg* and recvmsg*: process context, so the current
//! task and cgroup are the socket's user.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    },
    programs::SockAddrContext,
};
use eastwatch_common::{
    AF_INET, DIRECTION_EGRESS, FLAG_V4_MAPPED, IPPROTO_TCP, IPPROTO_UDP, OUTCOME_DATAGRAM, UdpPeer,
    counter,
};

use crate::{
    flow::{Addr, Edge, Occurrence, record},
    maps::{SOCKET_OWNERS, UDP_PEERS, count},
    owner::current_owner,
};

/// The address the syscall names and its port in host order, plus flags.
pub struct UserAddr {
    addr: Addr,
    port: u16,
    flags: u16,
}

/// `user_port` holds a network-order port in its low 16 bits.
#[inline(always)]
fn user_port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: a readable context field.
    let raw = unsafe { read_volatile(addr_of!((*ctx.sock_addr).user_port)) };
    u16::from_be(raw as u16)
}

#[inline(always)]
pub fn user_addr4(ctx: &SockAddrContext) -> UserAddr {
    // SAFETY: a readable context field.
    let ip = unsafe { read_volatile(addr_of!((*ctx.sock_addr).user_ip4)) };
    UserAddr {
        addr: Addr::v4(ip),
        port: user_port(ctx),
        flags: 0,
    }
}

#[inline(always)]
pub fn user_addr6(ctx: &SockAddrContext) -> UserAddr {
    let sa = ctx.sock_addr;
    // SAFETY: readable context fields; the verifier wants 32-bit loads.
    let words = unsafe {
        [
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
        ]
    };
    let (addr, flags) = Addr::v6(words);
    UserAddr {
        addr,
        port: user_port(ctx),
        flags,
    }
}

#[inline(always)]
fn socket(ctx: &SockAddrContext) -> *mut bpf_sock {
    // SAFETY: `sk` is always set for these program types.
    unsafe { read_volatile(addr_of!((*ctx.sock_addr).__bindgen_anon_1.sk)) }
}

/// The socket's bound address and port (zero before it is bound).
#[inline(always)]
fn local_end(sk: *mut bpf_sock) -> (Addr, u16) {
    // SAFETY: `sk` is a full socket; these fields are readable.
    unsafe {
        let port = read_volatile(addr_of!((*sk).src_port)) as u16;
        if read_volatile(addr_of!((*sk).family)) == u32::from(AF_INET) {
            (Addr::v4(read_volatile(addr_of!((*sk).src_ip4))), port)
        } else {
            let words = [
                read_volatile(addr_of!((*sk).src_ip6[0])),
                read_volatile(addr_of!((*sk).src_ip6[1])),
                read_volatile(addr_of!((*sk).src_ip6[2])),
                read_volatile(addr_of!((*sk).src_ip6[3])),
            ];
            (Addr::v6(words).0, port)
        }
    }
}

#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> u32 {
    // SAFETY: a readable context field.
    unsafe { read_volatile(addr_of!((*ctx.sock_addr).protocol)) }
}

/// connect(): TCP remembers the destination for sock_ops, which reports the
/// outcome; connected UDP has no outcome and is reported now.
#[inline(always)]
pub fn on_connect(ctx: &SockAddrContext, to: UserAddr) {
    let protocol = protocol(ctx);
    if protocol == u32::from(IPPROTO_UDP) {
        on_datagram(ctx, to, DIRECTION_EGRESS);
        return;
    }
    if protocol != u32::from(IPPROTO_TCP) {
        return;
    }
    let mut connector = current_owner();
    connector.connect_addr = to.addr.words;
    connector.connect_port = to.port;
    connector.connect_family = to.addr.family;
    connector.connect_flags = to.flags;
    let Some(owner) = SOCKET_OWNERS.get(socket(ctx).cast(), Some(&mut connector)) else {
        count(counter::SOCKET_STORAGE_FULL);
        return;
    };
    // The storage may predate this connect (created at socket()); the task
    // that connects is the one that uses the path.
    // SAFETY: `owner` is this socket's live storage.
    unsafe { *owner = connector };
}

/// Whether a datagram between this socket and `peer` answers one that went
/// the other way first (a DNS response, say).
#[inline(always)]
fn is_reply(ctx: &SockAddrContext, peer: &UserAddr, direction: u8) -> bool {
    let key = UdpPeer {
        // SAFETY: sock_addr programs may ask for the socket cookie.
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr: peer.addr.words,
        port: peer.port,
        family: peer.addr.family,
        _pad: [0; 5],
    };
    match UDP_PEERS.get_ptr(&key) {
        // SAFETY: a live map value.
        Some(first) => (unsafe { *first }) != u32::from(direction),
        None => {
            // LRU: a full map evicts; a lost insert only means the next
            // reply counts as a flow of its own.
            let _ = UDP_PEERS.insert(&key, &u32::from(direction), 0);
            false
        }
    }
}

/// A UDP datagram to (egress) or from (ingress) `peer`.
#[inline(always)]
pub fn on_datagram(ctx: &SockAddrContext, peer: UserAddr, direction: u8) {
    if protocol(ctx) != u32::from(IPPROTO_UDP) {
        return;
    }
    // SAFETY: process context: the current cgroup is the socket's user.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let sk = socket(ctx);
    let service_port = if direction == DIRECTION_EGRESS {
        peer.port
    } else {
        // SAFETY: `sk` is a full socket; src_port is readable.
        unsafe { read_volatile(addr_of!((*sk).src_port)) as u16 }
    };
    record(
        ctx,
        Edge {
            cgroup_id,
            remote: peer.addr,
            service_port,
            transport: IPPROTO_UDP,
            direction,
            outcome: OUTCOME_DATAGRAM,
        },
        // A known edge is never a reply (replies are not recorded), so the
        // reply check only runs for new ones.
        || {
            if is_reply(ctx, &peer, direction) {
                return None;
            }
            let (local, local_port) = local_end(sk);
            // The task's pid and comm only (not a whole owner stamp): this
            // closure's stack adds to the hook's, and 512 bytes is all.
            Some(Occurrence {
                local,
                local_port,
                remote_port: peer.port,
                pid_tgid: bpf_get_current_pid_tgid(),
                comm: bpf_get_current_comm().unwrap_or_default(),
                flags: peer.flags & FLAG_V4_MAPPED,
                socket: sk.cast_const().cast(),
            })
        },
    );
}
