//! Every map the programs share. Sizes here are defaults; the loader
//! overrides `FLOWS` and the flow ring buffer (`FLOW_EVENTS`) from the
//! agent's configuration.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE},
    btf_maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use eastwatch_common::{
    CgroupEvent, FlowEvent, FlowKey, FlowStats, SocketOwner, UdpPeer, counter, setting,
};

/// Folded flows: one entry per edge, LRU so a flood evicts old edges rather
/// than failing new ones.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats, 65536> = LruHashMap::new();

/// Which way the first datagram between a UDP socket and a peer went, so
/// replies fold into the flow instead of looking like a new one.
#[btf_map]
pub static UDP_PEERS: LruHashMap<UdpPeer, u32, 65536> = LruHashMap::new();

/// Network namespace cookie → inode, filled before a namespace's first
/// flow event is sent (see `netns`).
#[btf_map]
pub static NETNS_INODES: LruHashMap<u64, u32, 16384> = LruHashMap::new();

/// New flows for the agent (size in bytes, a power of two of pages).
#[btf_map]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { 1 << 22 }> = RingBuf::new();

/// Cgroup directory changes, kept apart so a flow flood can't starve them.
#[btf_map]
pub static CGROUP_EVENTS: RingBuf<CgroupEvent, { 1 << 20 }> = RingBuf::new();

/// Per-CPU accounting of what was offered and what was lost.
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { counter::COUNT as usize }> = PerCpuArray::new();

/// Switches the agent flips at run time.
#[btf_map]
pub static SETTINGS: Array<u32, { setting::COUNT as usize }> = Array::new();

/// Socket-local storage with the owner of every TCP and UDP socket.
///
/// Declared by hand because aya's `SkStorage` fixes its flags: `BPF_F_CLONE`
/// makes the kernel copy a listener's owner into every socket it accepts,
/// which is how inbound connections are attributed to the accepting
/// workload rather than to whatever task ran the softirq.
#[repr(C)]
pub struct SocketOwnerStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SocketOwner,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: the fields are never dereferenced; the loader reads them from BTF.
unsafe impl Sync for SocketOwnerStorage {}

impl SocketOwnerStorage {
    const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The owner stamped on `sk`, created from `init` when `init` is given.
    #[inline(always)]
    pub fn get(&self, sk: *mut c_void, init: Option<&mut SocketOwner>) -> Option<*mut SocketOwner> {
        let (value, flags) = match init {
            Some(init) => (
                core::ptr::from_mut(init).cast::<c_void>(),
                u64::from(aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE),
            ),
            None => (core::ptr::null_mut(), 0),
        };
        let map = core::ptr::from_ref(self).cast_mut().cast::<c_void>();
        // SAFETY: the helper checks `sk`; a null result means no storage.
        let ptr =
            unsafe { aya_ebpf::helpers::generated::bpf_sk_storage_get(map, sk, value, flags) };
        let ptr = ptr.cast::<SocketOwner>();
        if ptr.is_null() { None } else { Some(ptr) }
    }
}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCKET_OWNERS")]
pub static SOCKET_OWNERS: SocketOwnerStorage = SocketOwnerStorage::new();

/// Adds one to a per-CPU counter. Atomic because a softirq program can
/// interrupt a process-context one on the same CPU.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        add(slot, 1);
    }
}

/// Atomically adds `n` to a map value (BPF_ATOMIC add). The BPF target has
/// no compare-and-swap, so core's `AtomicU64::fetch_add` is unavailable.
#[inline(always)]
pub fn add(slot: *mut u64, n: u64) {
    // SAFETY: callers pass live, aligned map values.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, n) };
}

/// Whether kernel diagnostics are switched on.
#[inline(always)]
pub fn diagnostics_enabled() -> bool {
    SETTINGS
        .get(setting::DIAGNOSTICS)
        .is_some_and(|enabled| *enabled != 0)
}
