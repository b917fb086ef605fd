//! cgroup/connect*, sendmsg* and recvmsg*: process context, so the current
//! task and cgroup are the socket's user.

use core::{
    ffi::c_void,
    ptr::{addr_of, read_volatile},
};

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{
        BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_sk_lookup_udp, bpf_sk_release,
        },
    },
    programs::SockAddrContext,
};
use eastwatch_common::{
    AF_INET, DIRECTION_EGRESS, DIRECTION_INGRESS, FLAG_V4_MAPPED, IPPROTO_TCP, IPPROTO_UDP,
    OUTCOME_DATAGRAM, UDP_ANSWERING, UdpPeer, counter,
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
/// the other way first (a DNS response, say). Runs for every datagram, not
/// only for new edges: a second client socket's request folds into the
/// first one's edge, yet its reply must still be known as one.
#[inline(always)]
fn is_reply(ctx: &SockAddrContext, sk: *mut bpf_sock, peer: &UserAddr, direction: u8) -> bool {
    let key = UdpPeer {
        // SAFETY: sock_addr programs may ask for the socket cookie.
        socket_cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr: peer.addr.words,
        port: peer.port,
        family: peer.addr.family,
        _pad: [0; 5],
    };
    let Some(first) = UDP_PEERS.get_ptr_mut(&key) else {
        // LRU: a full map evicts; a lost insert only means the next
        // reply counts as a flow of its own.
        let _ = UDP_PEERS.insert(&key, &u32::from(direction), 0);
        if direction == DIRECTION_EGRESS {
            mark_sent_first(sk);
        }
        return false;
    };
    // SAFETY: a live map value.
    let seen = unsafe { *first };
    if direction == DIRECTION_INGRESS {
        return seen == u32::from(DIRECTION_EGRESS);
    }
    if seen != u32::from(DIRECTION_INGRESS) {
        return seen == UDP_ANSWERING;
    }
    // The peer spoke first. A datagram "from" anyone can be forged with a
    // raw socket, so it makes our sends replies only if the peer asked for
    // real; otherwise this socket is the one that initiates.
    let asked = peer_asked(ctx.as_ptr(), sk, peer);
    // SAFETY: as above; a race with another CPU writes the same answer.
    unsafe {
        *first = if asked {
            UDP_ANSWERING
        } else {
            u32::from(DIRECTION_EGRESS)
        }
    };
    if !asked {
        mark_sent_first(sk);
    }
    asked
}

/// Notes in the socket's owner stamp that it sent to a peer first.
#[inline(always)]
fn mark_sent_first(sk: *mut bpf_sock) {
    let mut owner = current_owner();
    owner.udp_sent_first = 1;
    match SOCKET_OWNERS.get(sk.cast(), Some(&mut owner)) {
        // SAFETY: `stamp` is this socket's live storage.
        Some(stamp) => unsafe { (*stamp).udp_sent_first = 1 },
        None => count(counter::SOCKET_STORAGE_FULL),
    }
}

// The host's ephemeral port range, filled by the loader from
// /proc/sys/net/ipv4/ip_local_port_range.
#[unsafe(no_mangle)]
static EPHEMERAL_PORT_FIRST: Global<u32> = Global::new(32768);
#[unsafe(no_mangle)]
static EPHEMERAL_PORT_LAST: Global<u32> = Global::new(60999);

/// Whether `peer`, which sent to this socket first, was asking: if a socket
/// of this network namespace owns the peer's address and port, it must have
/// sent to someone first (the kernel saw it, so it cannot be forged); a peer
/// elsewhere must use an ephemeral port, as clients do (a spoofed datagram
/// "from" a service port no longer hides sends to that service). A function
/// of its own: the lookup's tuple is not the hook's stack.
#[inline(never)]
fn peer_asked(ctx: *mut c_void, sk: *mut bpf_sock, peer: &UserAddr) -> bool {
    let (local, local_port) = local_end(sk);
    // The address the peer's datagram went to: our bound one, or for a
    // wildcard socket the peer's own (a local peer talks over its own
    // addresses).
    let ours = if local.family == peer.addr.family && local.words != [0; 4] {
        local.words
    } else {
        peer.addr.words
    };
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: ours,
                daddr: peer.addr.words,
                sport: local_port.to_be(),
                dport: peer.port.to_be(),
            },
        },
    };
    let size = if peer.addr.family == AF_INET {
        // The v4 member overlays the start of the v6 one.
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: ours[0],
            daddr: peer.addr.words[0],
            sport: local_port.to_be(),
            dport: peer.port.to_be(),
        };
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
    } else {
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
    };
    // SAFETY: `tuple` is on our stack and `size` matches its family;
    // a found socket is released below.
    let found = unsafe {
        bpf_sk_lookup_udp(
            ctx,
            &raw mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if found.is_null() {
        let port = u32::from(peer.port);
        return port >= EPHEMERAL_PORT_FIRST.load() && port <= EPHEMERAL_PORT_LAST.load();
    }
    // SAFETY: storage pointers stay valid for the program's run.
    let asked = SOCKET_OWNERS
        .get(found.cast(), None)
        .is_some_and(|stamp| unsafe { (*stamp).udp_sent_first } != 0);
    // SAFETY: `found` came from the lookup and is released once.
    unsafe { bpf_sk_release(found.cast()) };
    asked
}

/// A UDP datagram to (egress) or from (ingress) `peer`.
#[inline(always)]
pub fn on_datagram(ctx: &SockAddrContext, peer: UserAddr, direction: u8) {
    if protocol(ctx) != u32::from(IPPROTO_UDP) {
        return;
    }
    let sk = socket(ctx);
    if is_reply(ctx, sk, &peer, direction) {
        return;
    }
    // SAFETY: process context: the current cgroup is the socket's user.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
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
        || {
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
