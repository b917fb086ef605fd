//! cgroup_mkdir / cgroup_rmdir: the agent learns the path of every cgroup v2
//! directory from the kernel, so even a cgroup that lives for a few
//! milliseconds has a name when its flows arrive.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    Global,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str},
    },
    programs::RawTracePointContext,
};
use eastwatch_common::{CGROUP_PATH_LEN, counter};

use crate::maps::{CGROUP_EVENTS, count};

// Offsets in kernel structs, read by the loader from /sys/kernel/btf/vmlinux
// because Rust eBPF programs get no CO-RE relocations.
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CGROUP_ROOT_HIERARCHY_ID_OFFSET: Global<u32> = Global::new(0);

/// The default (v2) hierarchy has id 0; v1 hierarchies are ignored.
const DEFAULT_HIERARCHY_ID: i32 = 0;

#[inline(always)]
fn field<T>(base: *const u8, offset: &Global<u32>) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel(base.add(offset.load() as usize).cast::<T>()) }
        .map_err(i64::from)
}

/// Args: `(struct cgroup *cgrp, const char *path)`.
#[inline(always)]
pub fn on_cgroup_change(ctx: &RawTracePointContext, kind: u8) {
    if try_report(ctx, kind).is_err() {
        count(counter::CGROUP_READ_FAILED);
    }
}

#[inline(always)]
fn try_report(ctx: &RawTracePointContext, kind: u8) -> Result<(), i64> {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let root: *const u8 = field(cgrp, &CGROUP_ROOT_OFFSET)?;
    let hierarchy_id: i32 = field(root, &CGROUP_ROOT_HIERARCHY_ID_OFFSET)?;
    if hierarchy_id != DEFAULT_HIERARCHY_ID {
        return Ok(());
    }
    let kn: *const u8 = field(cgrp, &CGROUP_KN_OFFSET)?;
    let cgroup_id: u64 = field(kn, &KERNFS_NODE_ID_OFFSET)?;

    count(counter::CGROUP_EVENTS_OFFERED);
    let Some(mut entry) = CGROUP_EVENTS.reserve(0) else {
        count(counter::CGROUP_RINGBUF_FULL);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is an exclusive ring buffer reservation of the right
    // size; the string read is bounded by CGROUP_PATH_LEN.
    let copied = unsafe {
        (*event).cgroup_id = cgroup_id;
        (*event).timestamp_ns = bpf_ktime_get_boot_ns();
        (*event).kind = kind;
        (*event)._pad = [0; 2];
        bpf_probe_read_kernel_str(
            addr_of_mut!((*event).path).cast(),
            CGROUP_PATH_LEN as u32,
            path.cast(),
        )
    };
    if copied <= 0 {
        entry.discard(0);
        return Err(copied);
    }
    // SAFETY: as above.
    unsafe {
        (*event).path_len = (copied - 1) as u32;
        (*event).truncated = u8::from(copied as usize >= CGROUP_PATH_LEN);
    }
    entry.submit(0);
    Ok(())
}
