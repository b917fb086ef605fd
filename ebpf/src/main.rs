//! eastwatch's kernel programs.
//!
//! Who owns a socket is decided in process context and stamped into socket
//! storage: at `socket()` (cgroup/sock_create) and again at `connect()`.
//! Hooks that can run in softirq (sock_ops) only ever read that stamp.
//!
//! | hook | sees |
//! |---|---|
//! | cgroup/connect4, connect6 | TCP connect (stamps the destination), connected UDP |
//! | cgroup/sendmsg4, sendmsg6 | unconnected UDP sends |
//! | cgroup/recvmsg4, recvmsg6 | unconnected UDP receives |
//! | sockops | TCP established (both ends) and failed connects |
//! | raw_tp cgroup_mkdir, cgroup_rmdir | cgroup v2 directories |
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cgroup;
mod flow;
mod maps;
mod netns;
mod owner;
mod sock_addr;
mod sock_ops;

use aya_ebpf::{
    macros::{cgroup_sock, cgroup_sock_addr, raw_tracepoint, sock_ops},
    programs::{RawTracePointContext, SockAddrContext, SockContext, SockOpsContext},
};
use eastwatch_common::{CGROUP_MKDIR, CGROUP_RMDIR, DIRECTION_EGRESS, DIRECTION_INGRESS};

/// Every cgroup/sock and cgroup/sock_addr program must let the syscall go on.
const ALLOW: i32 = 1;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    owner::stamp_new_socket(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    sock_addr::on_connect(&ctx, sock_addr::user_addr4(&ctx));
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    sock_addr::on_connect(&ctx, sock_addr::user_addr6(&ctx));
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr::on_datagram(&ctx, sock_addr::user_addr4(&ctx), DIRECTION_EGRESS);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr::on_datagram(&ctx, sock_addr::user_addr6(&ctx), DIRECTION_EGRESS);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr::on_datagram(&ctx, sock_addr::user_addr4(&ctx), DIRECTION_INGRESS);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr::on_datagram(&ctx, sock_addr::user_addr6(&ctx), DIRECTION_INGRESS);
    ALLOW
}

#[sock_ops]
pub fn tcp_outcomes(ctx: SockOpsContext) -> u32 {
    sock_ops::on_sock_ops(&ctx);
    1
}

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: RawTracePointContext) -> i32 {
    cgroup::on_cgroup_change(&ctx, CGROUP_MKDIR);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: RawTracePointContext) -> i32 {
    cgroup::on_cgroup_change(&ctx, CGROUP_RMDIR);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
