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
    /// Send `count` datagrams with sendto, or with connect+send.
    UdpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u64,
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
            connected,
            reply,
        } => {
            let any: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
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
