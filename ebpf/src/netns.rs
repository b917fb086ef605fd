//! The inode number of each network namespace a flow was seen in, read from
//! the socket itself: a namespace can be gone (and its inode reused) by the
//! time the agent reads the event, so only the kernel knows it for sure.

use core::{ffi::c_void, ptr::addr_of};

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};

use crate::maps::NETNS_INODES;

// Offsets in kernel structs, read by the loader from /sys/kernel/btf/vmlinux
// because Rust eBPF programs get no CO-RE relocations.
/// `struct sock` → its `struct net *` (`__sk_common.skc_net.net`).
#[unsafe(no_mangle)]
static SOCK_NET_OFFSET: Global<u32> = Global::new(0);
/// `struct net` → `ns.inum`.
#[unsafe(no_mangle)]
static NET_INUM_OFFSET: Global<u32> = Global::new(0);

/// Notes the inode of the namespace `sk` lives in under `cookie`, once per
/// namespace. Runs only for new flows, before their event is sent. A
/// function of its own: its stack is not the hook's (512 bytes in all).
#[inline(never)]
pub fn remember(cookie: u64, sk: *const c_void) {
    if sk.is_null() || NETNS_INODES.get_ptr(&cookie).is_some() {
        return;
    }
    if let Ok(inode) = inode_of(sk) {
        // LRU: a full map evicts the longest-unused namespace; the agent
        // has its own copy of every inode it has read.
        let _ = NETNS_INODES.insert(&cookie, &inode, 0);
    }
}

#[inline(always)]
fn inode_of(sk: *const c_void) -> Result<u32, i32> {
    // The verifier forbids arithmetic on socket pointers; the pointer's
    // value, copied out of our own stack, is a plain number.
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let sk: u64 = unsafe { bpf_probe_read_kernel(addr_of!(sk).cast::<u64>()) }?;
    // SAFETY: as above.
    let net: u64 =
        unsafe { bpf_probe_read_kernel((sk + u64::from(SOCK_NET_OFFSET.load())) as *const u64) }?;
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((net + u64::from(NET_INUM_OFFSET.load())) as *const u32) }
}
