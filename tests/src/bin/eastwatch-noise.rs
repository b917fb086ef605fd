//! Unrelated traffic for the end-to-end suite: real TCP and UDP, IPv4 and
//! IPv6, on the host's loopback, between network namespaces joined by a
//! veth pair and inside short-lived namespaces nothing pins, from cgroups of
//! its own (`/eastwatch-noise/...`) that come and go, with new edges all the
//! time (new listening ports, new cgroups, new namespaces, closed ports).
//! No test knows about it: a test that fails while it runs asserts about
//! traffic it did not make.
//!
//! `eastwatch-noise` prints `ready` once every kind of traffic flows and
//! runs until its stdin closes, SIGINT or SIGTERM; then it removes every
//! process, cgroup and namespace it made. Workers (`eastwatch-noise worker`)
//! are its children.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, ChildStdin, Stdio},
    rc::Rc,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use eastwatch_tests::{
    TestCgroup, TestNetns,
    cgroup::cgroup2_mount,
    interrupt, netns,
    noise::LAN,
    spawn::{command_in, wait_or_kill},
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Pause between a worker's rounds of traffic.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Every how many rounds a worker opens fresh ports and knocks on
    /// closed ones (new edges).
    #[arg(long, default_value_t = 5)]
    fresh_every: u64,
}

#[derive(Subcommand)]
enum Role {
    /// One process of noise (started by the driver in its cgroup).
    Worker {
        #[arg(long)]
        v4: IpAddr,
        #[arg(long)]
        v6: IpAddr,
        /// Unshare a network namespace of its own (nothing pins it).
        #[arg(long)]
        own_netns: bool,
        /// Also knock on closed ports of its targets (attempted flows).
        #[arg(long)]
        closed_ports: bool,
        #[arg(long)]
        interval_ms: u64,
        #[arg(long)]
        fresh_every: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Worker {
            v4,
            v6,
            own_netns,
            closed_ports,
            interval_ms,
            fresh_every,
        }) => worker(
            v4,
            v6,
            own_netns,
            closed_ports,
            Duration::from_millis(interval_ms),
            fresh_every.max(1),
        ),
        None => driver(&cli),
    }
}

// ---------------------------------------------------------------- driver

/// How long things live before they are replaced by new ones.
const WORKER_LIFETIME: Duration = Duration::from_secs(6);
const UNPINNED_LIFETIME: Duration = Duration::from_secs(2);
const LAN_LIFETIME: Duration = Duration::from_secs(20);

/// Kinds of workers: which traffic they make.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// On the host's loopback.
    Loopback,
    /// On one end of the noise LAN.
    LanEnd(usize),
    /// In a namespace of its own, gone with it.
    Unpinned,
}

const KINDS: [Kind; 4] = [
    Kind::Loopback,
    Kind::LanEnd(0),
    Kind::LanEnd(1),
    Kind::Unpinned,
];

struct Lan {
    ends: [TestNetns; 2],
}

struct Worker {
    kind: Kind,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its servers, as `tcp ADDR` / `udp ADDR` lines for its peers.
    servers: Vec<String>,
    /// Keeps the namespaces it lives in.
    _lan: Option<Rc<Lan>>,
    cgroup: TestCgroup,
    retire_at: Instant,
}

impl Worker {
    fn tell(&mut self, lines: &[String]) {
        if let Some(stdin) = &mut self.stdin {
            for line in lines {
                let _ = writeln!(stdin, "{line}");
            }
            let _ = stdin.flush();
        }
    }

    /// Ends it (stdin closed: it stops after its round), then its cgroup.
    fn retire(mut self) {
        drop(self.stdin.take());
        wait_or_kill(&mut self.child, Duration::from_secs(3));
        // The noise goes on even if the kernel is slow to let a cgroup go
        // (its Drop tries once more).
        if !self.cgroup.try_remove(Duration::from_secs(10)) {
            eprintln!("eastwatch-noise: {} still busy", self.cgroup.path());
        }
    }
}

struct Driver {
    interval_ms: u64,
    fresh_every: u64,
    /// `eastwatch-noise/<unique>` under the cgroup v2 mount.
    top: String,
    made_cgroups: u64,
    made_namespaces: u64,
    workers: Vec<Worker>,
    lan: Option<(Rc<Lan>, Instant)>,
}

fn driver(cli: &Cli) -> anyhow::Result<()> {
    interrupt::catch();
    // Stdin closing (the parent is gone or done) stops it too.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        interrupt::raise();
    });
    let mut driver = Driver {
        interval_ms: cli.interval_ms,
        fresh_every: cli.fresh_every,
        top: format!("eastwatch-noise/{}", eastwatch_tests::unique("run")),
        made_cgroups: 0,
        made_namespaces: 0,
        workers: Vec::new(),
        lan: None,
    };
    let result = driver.run();
    driver.clean_up();
    eprintln!(
        "eastwatch-noise: {} worker cgroups and {} network namespaces made and removed",
        driver.made_cgroups, driver.made_namespaces
    );
    result
}

impl Driver {
    fn run(&mut self) -> anyhow::Result<()> {
        let mut announced = false;
        while !interrupt::interrupted() {
            let now = Instant::now();
            // Retire what has lived long enough.
            for mut worker in std::mem::take(&mut self.workers) {
                if worker.retire_at <= now || matches!(worker.child.try_wait(), Ok(Some(_))) {
                    worker.retire();
                } else {
                    self.workers.push(worker);
                }
            }
            if self
                .lan
                .as_ref()
                .is_none_or(|(_, made)| made.elapsed() >= LAN_LIFETIME)
            {
                let ends = [TestNetns::with_prefix("ewn"), TestNetns::with_prefix("ewn")];
                netns::link(&ends[0], &ends[1], LAN);
                self.made_namespaces += 2;
                self.lan = Some((Rc::new(Lan { ends }), Instant::now()));
            }
            // Start what is missing; stagger so not all retire at once.
            for (i, kind) in KINDS.into_iter().enumerate() {
                if !self.workers.iter().any(|w| w.kind == kind) {
                    let lifetime = match kind {
                        Kind::Unpinned => UNPINNED_LIFETIME,
                        _ => WORKER_LIFETIME + Duration::from_millis(700 * i as u64),
                    };
                    let worker = self.start(kind, lifetime)?;
                    self.introduce(worker);
                }
            }
            if !announced {
                println!("ready");
                let _ = std::io::stdout().flush();
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn start(&mut self, kind: Kind, lifetime: Duration) -> anyhow::Result<Worker> {
        let (mount, root) = cgroup2_mount();
        self.made_cgroups += 1;
        let cgroup = TestCgroup::at(
            &mount,
            &root,
            &format!("{}/w{}", self.top, self.made_cgroups),
        );
        let lan = match kind {
            Kind::LanEnd(_) => self.lan.as_ref().map(|(lan, _)| lan.clone()),
            _ => None,
        };
        let (v4, v6) = match kind {
            Kind::LanEnd(end) => LAN[end],
            Kind::Loopback | Kind::Unpinned => ("127.0.0.1", "::1"),
        };
        let exe = std::env::current_exe().context("own path")?;
        let ns = match (kind, &lan) {
            (Kind::LanEnd(end), Some(lan)) => Some(&lan.ends[end]),
            _ => None,
        };
        let mut command = command_in(&cgroup, ns, exe);
        command.args(["worker", "--v4", v4, "--v6", v6]);
        command.args(["--interval-ms", &self.interval_ms.to_string()]);
        command.args(["--fresh-every", &self.fresh_every.to_string()]);
        if kind == Kind::Unpinned {
            command.arg("--own-netns");
            self.made_namespaces += 1;
        }
        if matches!(kind, Kind::LanEnd(_)) {
            command.arg("--closed-ports");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start a noise worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("worker ready line")?;
        let Some(servers) = line.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            let status = child.wait();
            bail!("noise worker ({kind:?}) did not start: {line:?} {status:?}");
        };
        let servers = servers.split(' ').map(|s| s.replace('=', " ")).collect();
        Ok(Worker {
            kind,
            stdin: child.stdin.take(),
            child,
            servers,
            _lan: lan,
            cgroup,
            retire_at: Instant::now() + lifetime,
        })
    }

    /// Tells the new worker and its peers (same loopback, same LAN) about
    /// each other's servers.
    fn introduce(&mut self, mut worker: Worker) {
        let same_place = |a: Kind, b: Kind| {
            matches!(
                (a, b),
                (Kind::Loopback, Kind::Loopback) | (Kind::LanEnd(_), Kind::LanEnd(_))
            )
        };
        for peer in &mut self.workers {
            if same_place(peer.kind, worker.kind) {
                peer.tell(&worker.servers);
                let theirs = peer.servers.clone();
                worker.tell(&theirs);
            }
        }
        self.workers.push(worker);
    }

    fn clean_up(&mut self) {
        for worker in std::mem::take(&mut self.workers) {
            worker.retire();
        }
        self.lan = None;
        let (mount, _) = cgroup2_mount();
        let _ = std::fs::remove_dir(mount.join(&self.top));
        let _ = std::fs::remove_dir(mount.join("eastwatch-noise"));
    }
}

// ---------------------------------------------------------------- worker

const IO_TIMEOUT: Duration = Duration::from_secs(1);

fn worker(
    v4: IpAddr,
    v6: IpAddr,
    own_netns: bool,
    closed_ports: bool,
    interval: Duration,
    fresh_every: u64,
) -> anyhow::Result<()> {
    if own_netns {
        netns::unshare_with_loopback().context("a network namespace of its own")?;
    }
    let mut servers = Vec::new();
    let mut announce = Vec::new();
    for ip in [v4, v6] {
        let tcp = bind_retrying(|| TcpListener::bind((ip, 0)))?;
        let udp = bind_retrying(|| UdpSocket::bind((ip, 0)))?;
        announce.push(format!("tcp={}", tcp.local_addr()?));
        announce.push(format!("udp={}", udp.local_addr()?));
        servers.push(Target::Tcp(tcp.local_addr()?));
        servers.push(Target::Udp(udp.local_addr()?));
        std::thread::spawn(move || serve_tcp(&tcp));
        std::thread::spawn(move || serve_udp(&udp));
    }
    println!("ready {}", announce.join(" "));
    std::io::stdout().flush()?;

    let targets = Arc::new(Mutex::new(VecDeque::from(servers)));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (targets, done) = (targets.clone(), done.clone());
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if let Some(target) = Target::parse(&line) {
                    let mut targets = targets.lock().unwrap_or_else(|p| p.into_inner());
                    targets.push_back(target);
                    // Our own four stay first; peers come and go.
                    while targets.len() > 12 {
                        targets.remove(4);
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        });
    }

    let mut round: u64 = 0;
    while !done.load(Ordering::SeqCst) {
        round += 1;
        let list: Vec<Target> = targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        // Known paths again (folded repeats), one target per round.
        let target = list[(round as usize) % list.len()];
        let _ = target.exchange();
        // New edges: a fresh port on our own address (both families in
        // turn), and closed ports of the peers.
        let fresh = round.is_multiple_of(fresh_every);
        if fresh {
            let ip = if (round / fresh_every).is_multiple_of(2) {
                v4
            } else {
                v6
            };
            let _ = fresh_exchange(ip);
        }
        // Peers' addresses (after our own four servers) on closed ports.
        let peers = &list[4.min(list.len())..];
        if closed_ports && fresh && !peers.is_empty() {
            let peer = peers[(round as usize) % peers.len()].addr().ip();
            let addr = SocketAddr::new(peer, 40_000 + ((round / fresh_every) % 20_000) as u16);
            let _ = TcpStream::connect_timeout(&addr, IO_TIMEOUT);
            if let Ok(socket) = UdpSocket::bind(any_of(peer)) {
                let _ = socket.send_to(b"noise", addr);
            }
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Target {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

impl Target {
    fn parse(line: &str) -> Option<Self> {
        let (proto, addr) = line.split_once(' ')?;
        let addr = addr.trim().parse().ok()?;
        match proto {
            "tcp" => Some(Self::Tcp(addr)),
            "udp" => Some(Self::Udp(addr)),
            _ => None,
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Tcp(addr) | Self::Udp(addr) => *addr,
        }
    }

    /// One connection with a line echoed, or one datagram and its echo.
    fn exchange(&self) -> std::io::Result<()> {
        match self {
            Self::Tcp(addr) => {
                let mut stream = TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.write_all(b"noise\n")?;
                let mut buf = [0u8; 6];
                stream.read_exact(&mut buf)
            }
            Self::Udp(addr) => {
                let socket = UdpSocket::bind(any_of(addr.ip()))?;
                socket.set_read_timeout(Some(IO_TIMEOUT))?;
                socket.send_to(b"noise", addr)?;
                let mut buf = [0u8; 16];
                socket.recv_from(&mut buf).map(|_| ())
            }
        }
    }
}

/// A listener and a datagram socket on a new port of `ip`, used once.
fn fresh_exchange(ip: IpAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind((ip, 0))?;
    let addr = listener.local_addr()?;
    let mut client = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    let (mut server, _) = listener.accept()?;
    client.write_all(b"x")?;
    let mut buf = [0u8; 1];
    server.set_read_timeout(Some(IO_TIMEOUT))?;
    server.read_exact(&mut buf)?;

    let receiver = UdpSocket::bind((ip, 0))?;
    receiver.set_read_timeout(Some(IO_TIMEOUT))?;
    let sender = UdpSocket::bind(any_of(ip))?;
    sender.send_to(b"x", receiver.local_addr()?)?;
    receiver.recv_from(&mut buf).map(|_| ())
}

fn any_of(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Binds, retrying briefly: an IPv6 address of a namespace that just came
/// up may not be usable yet.
fn bind_retrying<T>(bind: impl Fn() -> std::io::Result<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bind() {
            Ok(socket) => return Ok(socket),
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err).context("bind"),
        }
    }
}

fn serve_tcp(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let mut buf = [0u8; 64];
        if let Ok(n) = stream.read(&mut buf) {
            let _ = stream.write_all(&buf[..n]);
        }
    }
}

fn serve_udp(socket: &UdpSocket) {
    let mut buf = [0u8; 1500];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        let _ = socket.send_to(&buf[..n], from);
    }
}
