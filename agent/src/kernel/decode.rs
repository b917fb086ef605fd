//! Raw ring buffer records to checked values. Nothing the kernel sends is
//! trusted to be in range: every enum field is validated.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ptr,
};

use eastwatch_common as wire;
use thiserror::Error;

use crate::flow::{Direction, FlowKey, Outcome, Transport};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected at least {expected}")]
    Size { got: usize, expected: usize },
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("unknown transport {0}")]
    Transport(u8),
    #[error("unknown direction {0}")]
    Direction(u8),
    #[error("unknown outcome {0}")]
    Outcome(u8),
    #[error("unknown cgroup event kind {0}")]
    CgroupKind(u8),
    #[error("cgroup path is not UTF-8")]
    CgroupPath,
}

/// A new-flow record from the kernel, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFlow {
    pub key: FlowKey,
    pub timestamp_ns: u64,
    pub socket_cookie: u64,
    /// Thread-group id (what userspace calls a pid); None when unknown.
    pub pid: Option<u32>,
    pub comm: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub process_from_socket: bool,
    pub owner_unknown: bool,
    pub v4_mapped: bool,
}

/// Reads a `T` from the start of a record at least its size; bytes past
/// it are ignored.
fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    if bytes.len() < expected {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is checked; T is a plain repr(C) wire struct for
    // which every bit pattern is valid; the read tolerates misalignment.
    Ok(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn ip_from_words(family: u8, words: [u32; 4]) -> Result<IpAddr, DecodeError> {
    match family {
        wire::AF_INET => Ok(IpAddr::V4(Ipv4Addr::from(u32::from_be(words[0])))),
        wire::AF_INET6 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.as_chunks_mut::<4>().0.iter_mut().zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        other => Err(DecodeError::Family(other)),
    }
}

/// The local address has its own family: a v4-mapped connection on an IPv6
/// socket reports IPv4 for both ends; an unbound socket reports zeros.
fn local_ip(remote: IpAddr, words: [u32; 4]) -> IpAddr {
    let family = match remote {
        IpAddr::V4(_) => wire::AF_INET,
        IpAddr::V6(_) => wire::AF_INET6,
    };
    ip_from_words(family, words).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub fn key(raw: &wire::FlowKey) -> Result<FlowKey, DecodeError> {
    let transport = match raw.transport {
        wire::IPPROTO_TCP => Transport::Tcp,
        wire::IPPROTO_UDP => Transport::Udp,
        other => return Err(DecodeError::Transport(other)),
    };
    let direction = match raw.direction {
        wire::DIRECTION_EGRESS => Direction::Egress,
        wire::DIRECTION_INGRESS => Direction::Ingress,
        other => return Err(DecodeError::Direction(other)),
    };
    let outcome = match raw.outcome {
        wire::OUTCOME_ESTABLISHED => Outcome::Established,
        wire::OUTCOME_ATTEMPTED => Outcome::Attempted,
        wire::OUTCOME_DATAGRAM => Outcome::Datagram,
        other => return Err(DecodeError::Outcome(other)),
    };
    Ok(FlowKey {
        cgroup_id: raw.cgroup_id,
        netns_cookie: raw.netns_cookie,
        remote: ip_from_words(raw.family, raw.remote_addr)?,
        service_port: raw.service_port,
        transport,
        direction,
        outcome,
    })
}

/// The task name up to its first NUL.
fn comm(raw: &[u8; wire::COMM_LEN]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

pub fn flow_event(bytes: &[u8]) -> Result<KernelFlow, DecodeError> {
    let raw: wire::FlowEvent = read_record(bytes)?;
    let key = key(&raw.key)?;
    let tgid = (raw.pid_tgid >> 32) as u32;
    Ok(KernelFlow {
        local: SocketAddr::new(local_ip(key.remote, raw.local_addr), raw.local_port),
        remote: SocketAddr::new(key.remote, raw.remote_port),
        key,
        timestamp_ns: raw.timestamp_ns,
        socket_cookie: raw.socket_cookie,
        pid: (tgid != 0).then_some(tgid),
        comm: comm(&raw.comm),
        process_from_socket: raw.flags & wire::FLAG_PROCESS_FROM_SOCKET != 0,
        owner_unknown: raw.flags & wire::FLAG_OWNER_UNKNOWN != 0,
        v4_mapped: raw.flags & wire::FLAG_V4_MAPPED != 0,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupChangeKind {
    Created,
    Removed,
}

/// A cgroup v2 directory created or removed, from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupChange {
    pub kind: CgroupChangeKind,
    pub cgroup_id: u64,
    pub path: String,
    pub truncated: bool,
}

pub fn cgroup_event(bytes: &[u8]) -> Result<CgroupChange, DecodeError> {
    let raw: wire::CgroupEvent = read_record(bytes)?;
    let kind = match raw.kind {
        wire::CGROUP_MKDIR => CgroupChangeKind::Created,
        wire::CGROUP_RMDIR => CgroupChangeKind::Removed,
        other => return Err(DecodeError::CgroupKind(other)),
    };
    let len = (raw.path_len as usize).min(wire::CGROUP_PATH_LEN);
    let path = std::str::from_utf8(&raw.path[..len]).map_err(|_| DecodeError::CgroupPath)?;
    Ok(CgroupChange {
        kind,
        cgroup_id: raw.cgroup_id,
        path: path.to_owned(),
        truncated: raw.truncated != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(value: &T) -> &[u8] {
        // SAFETY: test-only view of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts(ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
    }

    fn raw_event() -> wire::FlowEvent {
        let mut comm = [0u8; wire::COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        wire::FlowEvent {
            key: wire::FlowKey {
                cgroup_id: 42,
                netns_cookie: 7,
                remote_addr: [u32::from(Ipv4Addr::new(10, 0, 0, 2)).to_be(), 0, 0, 0],
                service_port: 80,
                family: wire::AF_INET,
                transport: wire::IPPROTO_TCP,
                direction: wire::DIRECTION_EGRESS,
                outcome: wire::OUTCOME_ESTABLISHED,
                _pad: [0; 2],
            },
            timestamp_ns: 1,
            socket_cookie: 99,
            pid_tgid: (1234u64 << 32) | 1235,
            local_addr: [u32::from(Ipv4Addr::new(10, 0, 0, 1)).to_be(), 0, 0, 0],
            local_port: 51000,
            remote_port: 80,
            flags: wire::FLAG_PROCESS_FROM_SOCKET,
            _pad: [0; 2],
            comm,
        }
    }

    #[test]
    fn decodes_a_tcp_egress_event() {
        let flow = flow_event(as_bytes(&raw_event())).expect("valid");
        assert_eq!(flow.key.remote, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(flow.local, "10.0.0.1:51000".parse().expect("addr"));
        assert_eq!(flow.key.direction, Direction::Egress);
        assert_eq!(flow.key.outcome, Outcome::Established);
        assert_eq!(flow.pid, Some(1234));
        assert_eq!(flow.comm, "curl");
        assert!(flow.process_from_socket);
        assert!(!flow.owner_unknown);
    }

    #[test]
    fn decodes_ipv6_words_in_network_order() {
        let addr: Ipv6Addr = "fd00::1:2".parse().expect("addr");
        let octets = addr.octets();
        let words = [0, 1, 2, 3].map(|i| {
            u32::from_ne_bytes([
                octets[i * 4],
                octets[i * 4 + 1],
                octets[i * 4 + 2],
                octets[i * 4 + 3],
            ])
        });
        assert_eq!(
            ip_from_words(wire::AF_INET6, words).expect("v6"),
            IpAddr::V6(addr)
        );
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let mut raw = raw_event();
        raw.key.transport = 99;
        assert_eq!(flow_event(as_bytes(&raw)), Err(DecodeError::Transport(99)));
        let mut raw = raw_event();
        raw.key.family = 3;
        assert_eq!(flow_event(as_bytes(&raw)), Err(DecodeError::Family(3)));
        let mut raw = raw_event();
        raw.key.direction = 0;
        assert_eq!(flow_event(as_bytes(&raw)), Err(DecodeError::Direction(0)));
        assert!(matches!(
            flow_event(&as_bytes(&raw_event())[..10]),
            Err(DecodeError::Size { got: 10, .. })
        ));
    }

    #[test]
    fn decodes_cgroup_paths() {
        let mut raw = wire::CgroupEvent {
            cgroup_id: 5,
            timestamp_ns: 0,
            path_len: 6,
            kind: wire::CGROUP_MKDIR,
            truncated: 0,
            _pad: [0; 2],
            path: [0; wire::CGROUP_PATH_LEN],
        };
        raw.path[..6].copy_from_slice(b"/a/b/c");
        let change = cgroup_event(as_bytes(&raw)).expect("valid");
        assert_eq!(change.path, "/a/b/c");
        assert_eq!(change.kind, CgroupChangeKind::Created);
        raw.kind = 9;
        assert_eq!(
            cgroup_event(as_bytes(&raw)),
            Err(DecodeError::CgroupKind(9))
        );
    }
}
