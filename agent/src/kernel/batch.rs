//! Reading a whole hash map in a few syscalls (`BPF_MAP_LOOKUP_BATCH`).
//!
//! Walking the flow table key by key costs two syscalls an entry (about
//! 3 µs); a full 64k-entry table every count interval is a tenth of a core.
//! aya has no batch API, hence this one raw call.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a (non per-CPU) hash map, `chunk` entries a call. Errors
/// with `Unsupported` where the kernel lacks batch lookups.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>, chunk: u32) -> io::Result<Vec<(K, V)>> {
    let mut entries = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(chunk as usize);
    let mut values: Vec<V> = Vec::with_capacity(chunk as usize);
    // The batch token: a bucket index (u32) for hash maps; u64 is room.
    let mut token_in: u64 = 0;
    let mut token_out: u64 = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_mut(&mut token_in) as u64
            },
            out_batch: std::ptr::from_mut(&mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes buffers of `chunk` keys and values that
        // outlive the call; the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let filled = (attr.count as usize).min(chunk as usize);
        // SAFETY: the kernel initialised the first `filled` entries; K and V
        // are Pod.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled);
        }
        entries.extend(keys.drain(..).zip(values.drain(..)));
        match error {
            None => {}
            // ENOENT: the walk reached the end.
            Some(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(entries),
            Some(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, err));
            }
            Some(err) => return Err(err),
        }
        token_in = token_out;
        first = false;
    }
}
