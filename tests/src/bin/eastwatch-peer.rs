//! A real client or server for the end-to-end tests: plain std sockets, so
//! every syscall the kernel programs hook is the one an application makes.
//!
//! Servers print `ready ADDR` once bound; clients print `done` at the end.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Accept `count` connections (0: forever), echo one line on each and
    /// keep it open until the client closes it.
    TcpServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Connect `count` times, one after the other, exchanging a line.
    TcpConnect {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Keep the (last) connection open until stdin closes.
        #[arg(long)]
        hold: bool,
        /// Expect the connection to fail (refused) and say so.
        #[arg(long)]
        expect_refused: bool,
    },
    /// Answer `count` datagrams (0: forever) to their senders.
    UdpServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Send `count` datagrams with sendto, or with connect+send, from each
    /// of `sockets` sockets in turn (a resolver opens one per query).
    UdpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        sockets: u64,
        #[arg(long)]
        connected: bool,
        /// Wait for a reply to each datagram.
        #[arg(long)]
        reply: bool,
    },
    /// One datagram to every port in `first..=last` at `to`'s address.
    UdpSweep {
        #[arg(long)]
        to: std::net::IpAddr,
        #[arg(long)]
        first: u16,
        #[arg(long)]
        last: u16,
    },
    /// One TCP connect to every port in `first..=last` at `to`'s address,
    /// whatever the answer (a port scan).
    TcpSweep {
        #[arg(long)]
        to: std::net::IpAddr,
        #[arg(long)]
        first: u16,
        #[arg(long)]
        last: u16,
    },
    /// In a network namespace of its own that nothing pins (gone when this
    /// exits): one TCP connection and one UDP exchange on its loopback.
    /// Prints `netns INODE`.
    UnpinnedLoopback,
    /// The spoofed-reply trick: bind a UDP socket, forge with a raw socket
    /// a datagram "from" `target` to it, read it, then send `sends`
    /// datagrams to `target` (which the forged one must not make replies).
    UdpSpoofedReply {
        #[arg(long)]
        target: std::net::SocketAddrV4,
        #[arg(long, default_value_t = 3)]
        sends: u64,
    },
    /// A hand-made TCP SYN to `to` from a raw socket (IPPROTO_TCP with the
    /// IP header included), as a scanner sends it.
    RawSyn {
        #[arg(long)]
        to: std::net::SocketAddrV4,
    },
    /// A minimal HTTP/1.1 server: answers every request with 200.
    HttpServe {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn ready(addr: SocketAddr) {
    println!("ready {addr}");
    let _ = std::io::stdout().flush();
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().role {
        Role::TcpServe { listen, count } => {
            let listener = TcpListener::bind(listen).context("bind")?;
            ready(listener.local_addr()?);
            let mut connections = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream?;
                connections.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let _ = stream.write_all(&buf[..n]);
                    // Until the client closes: long-lived connections stay
                    // established on both ends.
                    while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
                }));
                if count != 0 && connections.len() as u64 >= count {
                    break;
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        }
        Role::TcpConnect {
            to,
            count,
            hold,
            expect_refused,
        } => {
            if expect_refused {
                let err = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                    .err()
                    .context("connected, but a refusal was expected")?;
                println!("refused {err}");
                return Ok(());
            }
            let mut last = None;
            for _ in 0..count {
                let mut stream = TcpStream::connect(to).context("connect")?;
                stream.write_all(b"hello\n")?;
                let mut buf = [0u8; 6];
                stream.read_exact(&mut buf)?;
                last = Some(stream);
            }
            println!("done");
            let _ = std::io::stdout().flush();
            if hold {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
                drop(last);
            }
        }
        Role::UdpServe { listen, count } => {
            let socket = UdpSocket::bind(listen).context("bind")?;
            ready(socket.local_addr()?);
            let mut served = 0;
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                socket.send_to(&buf[..n], from)?;
                served += 1;
                if count != 0 && served >= count {
                    break;
                }
            }
        }
        Role::UdpSend {
            to,
            count,
            sockets,
            connected,
            reply,
        } => {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            for _ in 0..sockets {
                let socket = UdpSocket::bind(any)?;
                socket.set_read_timeout(Some(Duration::from_secs(5)))?;
                if connected {
                    socket.connect(to)?;
                }
                let mut buf = [0u8; 64];
                for _ in 0..count {
                    if connected {
                        socket.send(b"ping")?;
                    } else {
                        socket.send_to(b"ping", to)?;
                    }
                    if reply {
                        socket.recv_from(&mut buf).context("no reply")?;
                    }
                }
            }
            println!("done");
        }
        Role::UdpSpoofedReply { target, sends } => {
            let socket = UdpSocket::bind(SocketAddr::new((*target.ip()).into(), 0))?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            let SocketAddr::V4(own) = socket.local_addr()? else {
                anyhow::bail!("bound an IPv4 address, got another");
            };
            let mut datagram = Vec::from(target.port().to_be_bytes());
            datagram.extend(own.port().to_be_bytes());
            datagram.extend(12u16.to_be_bytes()); // length: header and "lure"
            datagram.extend([0, 0]); // no checksum (allowed over IPv4)
            datagram.extend(b"lure");
            raw::send(libc::IPPROTO_UDP, *target.ip(), *own.ip(), &datagram)?;
            let mut buf = [0u8; 64];
            let (_, from) = socket.recv_from(&mut buf).context("no forged datagram")?;
            anyhow::ensure!(from == SocketAddr::V4(target), "forged from {from}");
            for _ in 0..sends {
                socket.send_to(b"ping", target)?;
            }
            println!("done");
        }
        Role::RawSyn { to } => {
            let segment = raw::syn(*to.ip(), *to.ip(), 40000, to.port());
            raw::send(libc::IPPROTO_TCP, *to.ip(), *to.ip(), &segment)?;
            println!("done");
        }
        Role::UdpSweep { to, first, last } => {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let socket = UdpSocket::bind(any)?;
            for port in first..=last {
                // A closed port answers with ICMP; sendto still succeeds or
                // reports the previous error, which is not ours to care about.
                let _ = socket.send_to(b"x", SocketAddr::new(to, port));
            }
            println!("done");
        }
        Role::TcpSweep { to, first, last } => {
            for port in first..=last {
                let _ =
                    TcpStream::connect_timeout(&SocketAddr::new(to, port), Duration::from_secs(2));
            }
            println!("done");
        }
        Role::UnpinnedLoopback => {
            eastwatch_tests::netns::unshare_with_loopback().context("own namespace")?;
            let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
            let mut client = TcpStream::connect(listener.local_addr()?).context("connect")?;
            let (mut server, _) = listener.accept()?;
            client.write_all(b"hello\n")?;
            let mut buf = [0u8; 6];
            server.read_exact(&mut buf)?;
            let receiver = UdpSocket::bind("127.0.0.1:0")?;
            let sender = UdpSocket::bind("127.0.0.1:0")?;
            sender.send_to(b"ping", receiver.local_addr()?)?;
            let (n, from) = receiver.recv_from(&mut buf)?;
            receiver.send_to(&buf[..n], from)?;
            sender.recv_from(&mut buf)?;
            println!("netns {}", eastwatch_tests::netns::own_inode()?);
        }
        Role::HttpServe { listen } => {
            let listener = TcpListener::bind(listen).context("bind")?;
            ready(listener.local_addr()?);
            for stream in listener.incoming() {
                let mut stream = stream?;
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            }
        }
    }
    Ok(())
}

/// Hand-made IPv4 packets from raw sockets, as scanners and spoofers send
/// them (the header included, so the source address is ours to choose).
mod raw {
    use std::{io, net::Ipv4Addr};

    /// Sends `payload` of `protocol` from `from` to `to` with an IP header
    /// we wrote, from a raw socket of that protocol.
    pub fn send(protocol: i32, from: Ipv4Addr, to: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        // SAFETY: plain syscalls on a descriptor we own and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let result = send_on(fd, protocol, from, to, payload);
            libc::close(fd);
            result
        }
    }

    /// # Safety
    /// `fd` is an open raw IPv4 socket.
    unsafe fn send_on(
        fd: i32,
        protocol: i32,
        from: Ipv4Addr,
        to: Ipv4Addr,
        payload: &[u8],
    ) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid option value of the right size.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_HDRINCL,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut packet = vec![0x45, 0]; // IPv4, 20-byte header
        packet.extend(((20 + payload.len()) as u16).to_be_bytes());
        packet.extend([0, 0, 0x40, 0, 64, protocol as u8, 0, 0]); // id, DF, TTL; the kernel sums
        packet.extend(from.octets());
        packet.extend(to.octets());
        packet.extend(payload);
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: buffer and address are valid for their lengths.
        let sent = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A TCP SYN segment with a correct checksum.
    pub fn syn(from: Ipv4Addr, to: Ipv4Addr, source_port: u16, port: u16) -> Vec<u8> {
        let mut segment = Vec::from(source_port.to_be_bytes());
        segment.extend(port.to_be_bytes());
        segment.extend(0x1234_5678_u32.to_be_bytes()); // sequence number
        segment.extend([0; 4]); // acknowledgement
        segment.extend([0x50, 0x02]); // 20-byte header, SYN
        segment.extend(64240_u16.to_be_bytes()); // window
        segment.extend([0; 4]); // checksum, urgent pointer
        let mut pseudo = Vec::from(from.octets());
        pseudo.extend(to.octets());
        pseudo.extend([0, libc::IPPROTO_TCP as u8]);
        pseudo.extend((segment.len() as u16).to_be_bytes());
        pseudo.extend(&segment);
        let sum = checksum(&pseudo);
        segment[16..18].copy_from_slice(&sum.to_be_bytes());
        segment
    }

    /// The Internet checksum (RFC 1071) of an even-length buffer.
    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}
