//! The start-up scan: every network namespace's sockets, classified into
//! connections (reported once as pre-existing flows) and listeners (which
//! own connections they accept later but have no kernel owner stamp).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use super::{
    diag::{self, DiagSocket, TCP_ESTABLISHED, TCP_LISTEN, is_connected_tcp_state},
    netns::{self, Netns},
    owners::{self, SocketHolder},
};
use crate::flow::{Direction, Transport};

/// A connection that existed before the agent started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingConnection {
    pub netns_cookie: u64,
    pub netns_inode: u64,
    pub transport: Transport,
    pub direction: Direction,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub socket_cookie: u64,
    pub holder: Option<SocketHolder>,
}

impl ExistingConnection {
    pub fn service_port(&self) -> u16 {
        match self.direction {
            Direction::Egress => self.remote.port(),
            Direction::Ingress => self.local.port(),
        }
    }
}

/// Listening TCP sockets that predate the agent, by namespace and port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerTable {
    listeners: HashMap<(u64, u16), SocketHolder>,
}

impl ListenerTable {
    pub fn insert(&mut self, netns_cookie: u64, port: u16, holder: SocketHolder) {
        self.listeners.entry((netns_cookie, port)).or_insert(holder);
    }

    /// Who listens on `port` in the namespace with `netns_cookie`.
    pub fn holder(&self, netns_cookie: u64, port: u16) -> Option<&SocketHolder> {
        self.listeners.get(&(netns_cookie, port))
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }
}

/// One namespace's sockets.
#[derive(Debug, Clone)]
pub struct NamespaceSockets {
    pub inode: u64,
    pub cookie: u64,
    pub sockets: Vec<DiagSocket>,
}

/// Everything the scan found, and what it could not read.
#[derive(Debug, Default)]
pub struct StartupScan {
    pub connections: Vec<ExistingConnection>,
    pub listeners: ListenerTable,
    /// Network namespace cookie → inode, for every namespace scanned.
    pub namespaces: BTreeMap<u64, u64>,
    pub errors: Vec<String>,
}

/// The cookie and sockets of one namespace.
pub fn scan_namespace(ns: &Netns) -> std::io::Result<NamespaceSockets> {
    let inode = ns.inode;
    netns::run_in(&ns.handle, move || {
        Ok(NamespaceSockets {
            inode,
            cookie: netns::current_cookie()?,
            sockets: diag::dump_all()?,
        })
    })
}

/// Scans every namespace and classifies what it finds.
pub fn scan() -> StartupScan {
    let mut errors = Vec::new();
    let mut namespaces = Vec::new();
    for ns in netns::enumerate() {
        match scan_namespace(&ns) {
            Ok(found) => namespaces.push(found),
            Err(err) => errors.push(format!(
                "network namespace {} ({}): {err}",
                ns.inode,
                ns.handle.display()
            )),
        }
    }
    let holders = owners::socket_holders();
    let mut scan = classify(&namespaces, &holders);
    scan.errors = errors;
    scan
}

/// Splits sockets into listeners and connections. A TCP connection whose
/// local port has a listener in the same namespace was accepted (ingress);
/// any other was initiated (egress). Connected UDP sockets are egress;
/// unconnected ones are receivers, not flows.
pub fn classify(
    namespaces: &[NamespaceSockets],
    holders: &HashMap<u64, SocketHolder>,
) -> StartupScan {
    let mut scan = StartupScan::default();
    for ns in namespaces {
        scan.namespaces.insert(ns.cookie, ns.inode);
        let listening: Vec<u16> = ns
            .sockets
            .iter()
            .filter(|s| s.transport == Transport::Tcp && s.state == TCP_LISTEN)
            .map(|s| s.local.port())
            .collect();
        for socket in &ns.sockets {
            let holder = holders.get(&socket.inode).cloned();
            let direction = match (socket.transport, socket.state) {
                (Transport::Tcp, TCP_LISTEN) => {
                    if let Some(holder) = holder {
                        scan.listeners
                            .insert(ns.cookie, socket.local.port(), holder);
                    }
                    continue;
                }
                (Transport::Tcp, state) if is_connected_tcp_state(state) => {
                    if listening.contains(&socket.local.port()) {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    }
                }
                (Transport::Udp, TCP_ESTABLISHED) => Direction::Egress,
                _ => continue,
            };
            scan.connections.push(ExistingConnection {
                netns_cookie: ns.cookie,
                netns_inode: ns.inode,
                transport: socket.transport,
                direction,
                local: socket.local,
                remote: socket.remote,
                socket_cookie: socket.cookie,
                holder,
            });
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(
        transport: Transport,
        state: u8,
        local: &str,
        remote: &str,
        inode: u64,
    ) -> DiagSocket {
        DiagSocket {
            transport,
            state,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            inode,
            cookie: inode * 10,
        }
    }

    fn holder(pid: u32) -> SocketHolder {
        SocketHolder {
            pid,
            comm: format!("p{pid}"),
            cgroup_path: Some(format!("/g{pid}")),
        }
    }

    #[test]
    fn tells_accepted_from_initiated_connections() {
        let ns = NamespaceSockets {
            inode: 4026531840,
            cookie: 1,
            sockets: vec![
                socket(Transport::Tcp, TCP_LISTEN, "0.0.0.0:80", "0.0.0.0:0", 1),
                socket(
                    Transport::Tcp,
                    TCP_ESTABLISHED,
                    "10.0.0.1:80",
                    "10.0.0.2:40000",
                    2,
                ),
                socket(
                    Transport::Tcp,
                    TCP_ESTABLISHED,
                    "10.0.0.1:40001",
                    "10.0.0.3:5432",
                    3,
                ),
                socket(
                    Transport::Udp,
                    TCP_ESTABLISHED,
                    "10.0.0.1:40002",
                    "10.0.0.4:53",
                    4,
                ),
                socket(
                    Transport::Udp,
                    diag::UDP_UNCONNECTED,
                    "0.0.0.0:53",
                    "0.0.0.0:0",
                    5,
                ),
            ],
        };
        let holders: HashMap<u64, SocketHolder> =
            [(1, holder(100)), (2, holder(100)), (3, holder(200))].into();
        let scan = classify(&[ns], &holders);

        assert_eq!(scan.listeners.holder(1, 80), Some(&holder(100)));
        assert_eq!(scan.connections.len(), 3);
        let accepted = &scan.connections[0];
        assert_eq!(accepted.direction, Direction::Ingress);
        assert_eq!(accepted.service_port(), 80);
        let initiated = &scan.connections[1];
        assert_eq!(initiated.direction, Direction::Egress);
        assert_eq!(initiated.service_port(), 5432);
        assert_eq!(initiated.holder, Some(holder(200)));
        let udp = &scan.connections[2];
        assert_eq!(
            (udp.transport, udp.direction),
            (Transport::Udp, Direction::Egress)
        );
        assert_eq!(udp.holder, None);
        assert_eq!(scan.namespaces.get(&1), Some(&4026531840));
    }
}
