//! A sock_diag (NETLINK_SOCK_DIAG) dump of the calling thread's network
//! namespace: TCP connections and listeners, UDP sockets, IPv4 and IPv6.

use std::{io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

use crate::flow::Transport;

/// TCP states as the kernel numbers them (`TCP_ESTABLISHED`, `TCP_LISTEN`).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;

/// TCP states of a connection that exists (a handshake completed and at
/// most one side has closed): ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT,
/// LAST_ACK, CLOSING. TIME_WAIT sockets have no owner left to report.
fn connected_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// Whether a dumped TCP state is one of [`connected_states`].
pub fn is_connected_tcp_state(state: u8) -> bool {
    // ESTABLISHED=1, FIN_WAIT1=4, FIN_WAIT2=5, CLOSE_WAIT=8, LAST_ACK=9, CLOSING=11
    matches!(state, 1 | 4 | 5 | 8 | 9 | 11)
}
/// UDP sockets report `TCP_CLOSE` unless connected (then ESTABLISHED).
#[cfg(test)]
pub const UDP_UNCONNECTED: u8 = 7;

/// One socket from the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub transport: Transport,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
    pub cookie: u64,
}

/// Connected and listening TCP, and every UDP socket, both families.
pub fn dump_all() -> io::Result<Vec<DiagSocket>> {
    let mut sockets = Vec::new();
    for family in [AF_INET, AF_INET6] {
        sockets.extend(dump(
            family,
            IPPROTO_TCP,
            connected_states() | StateFlags::LISTEN,
        )?);
        sockets.extend(dump(family, IPPROTO_UDP, StateFlags::all())?);
    }
    Ok(sockets)
}

fn dump(family: u8, protocol: u8, states: StateFlags) -> io::Result<Vec<DiagSocket>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let transport = if protocol == IPPROTO_TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let mut sockets = Vec::new();
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&receive[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    sockets.push(from_response(transport, &response));
                }
                NetlinkPayload::Done(_) => return Ok(sockets),
                NetlinkPayload::Error(error) if error.code.is_some() => return Err(error.to_io()),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

fn from_response(transport: Transport, response: &InetResponse) -> DiagSocket {
    let id = &response.header.socket_id;
    DiagSocket {
        transport,
        state: response.header.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        inode: u64::from(response.header.inode),
        cookie: u64::from_ne_bytes(id.cookie),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_listener_and_a_connection_of_our_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let client_port = client.local_addr().expect("addr").port();

        let sockets = dump_all().expect("sock_diag dump");
        assert!(
            sockets
                .iter()
                .any(|s| s.state == TCP_LISTEN && s.local.port() == port)
        );
        let outbound = sockets
            .iter()
            .find(|s| s.state == TCP_ESTABLISHED && s.local.port() == client_port)
            .expect("client socket");
        assert_eq!(outbound.remote.port(), port);
        assert_ne!(outbound.inode, 0);
        assert_ne!(outbound.cookie, 0);
    }
}
