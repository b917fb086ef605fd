//! What eastwatch costs the traffic it watches, and how fast the agent
//! takes events in. Run by `cargo xtask bench` (root; the release agent in
//! EASTWATCH_BIN).
//!
//! Each workload runs alternately without and with the agent attached, in
//! one process and one run, so the ratio compares like with like.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

const ROUNDS: usize = 3;

fn agent_binary() -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os("EASTWATCH_BIN")
        .map(Into::into)
        .context("EASTWATCH_BIN must name the eastwatch binary")
}

/// A running `eastwatch observe`; its output is drained and kept.
struct Agent {
    child: Child,
    output: std::thread::JoinHandle<Vec<Value>>,
}

impl Agent {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(agent_binary()?)
            .args(["observe", "--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start eastwatch")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let output = std::thread::spawn(move || {
            let mut events = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "ready" {
                    let _ = ready_tx.send(());
                }
                // Flows are many and not needed; keep the rest.
                if event["event"] != "flow" && event["event"] != "flow_update" {
                    events.push(event);
                }
            }
            events
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .context("agent never became ready")?;
        Ok(Self { child, output })
    }

    /// Stops the agent; returns its summary record.
    fn stop(self) -> anyhow::Result<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let mut child = self.child;
        child.wait()?;
        let events = self
            .output
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        events
            .into_iter()
            .find(|e| e["event"] == "summary")
            .context("no summary")
    }
}

/// Sequential TCP connections on loopback, each exchanging one byte.
fn tcp_connections(count: u32) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..count {
            let (mut stream, _) = listener.accept()?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte)?;
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let started = Instant::now();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(b"x")?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
    }
    let elapsed = started.elapsed();
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(f64::from(count) / elapsed.as_secs_f64())
}

/// Unconnected UDP datagrams to one receiver on loopback.
fn udp_datagrams(count: u32) -> anyhow::Result<f64> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    let addr = receiver.local_addr()?;
    let drain = std::thread::spawn(move || {
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok();
        let mut buf = [0u8; 64];
        while receiver.recv(&mut buf).is_ok() {}
    });
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let started = Instant::now();
    for _ in 0..count {
        sender.send_to(b"ping", addr)?;
    }
    let rate = f64::from(count) / started.elapsed().as_secs_f64();
    drain
        .join()
        .map_err(|_| anyhow::anyhow!("drain panicked"))?;
    Ok(rate)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `workload` alternately without and with the agent.
fn compare(name: &str, workload: impl Fn() -> anyhow::Result<f64>) -> anyhow::Result<()> {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(workload()?);
        let agent = Agent::start(&[])?;
        with.push(workload()?);
        agent.stop()?;
    }
    let (bare, watched) = (median(without), median(with));
    println!(
        "{name:<28} {bare:>12.0}/s without  {watched:>12.0}/s with eastwatch  ratio {:.3}",
        watched / bare
    );
    Ok(())
}

/// Distinct new flows as fast as one sender can make them; the agent must
/// take every event in.
fn event_intake(flows: u32) -> anyhow::Result<()> {
    let agent = Agent::start(&[
        "--ring-buffer-bytes",
        "67108864",
        "--flow-map-entries",
        "1048576",
        "--no-existing",
    ])?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let started = Instant::now();
    let mut sent = 0u32;
    'outer: for host in 1..=255u8 {
        for port in 1024..=65535u16 {
            if sent == flows {
                break 'outer;
            }
            let _ = sender.send_to(
                b"x",
                SocketAddr::from((Ipv4Addr::new(127, 7, 0, host), port)),
            );
            sent += 1;
        }
    }
    let produced = started.elapsed();
    let summary = agent.stop()?;
    let decoded = summary["agent"]["flow_events_decoded"]
        .as_u64()
        .unwrap_or(0);
    let lost = summary["kernel"]["flow_ring_buffer_full"]["total"]
        .as_u64()
        .unwrap_or(0);
    let rate = summary["decode_rate_per_sec"].as_f64().unwrap_or(0.0);
    println!(
        "{:<28} {sent} new flows made in {:.2}s ({:.0}/s); agent decoded {decoded}, lost {lost}; decoding {:.0} events/s",
        "event intake",
        produced.as_secs_f64(),
        f64::from(sent) / produced.as_secs_f64(),
        rate
    );
    if decoded + lost < u64::from(sent) {
        bail!("the kernel offered fewer events than flows were made");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the kernel benchmark attaches eBPF programs: run it as root");
    }
    println!("eastwatch kernel benchmark ({ROUNDS} alternating rounds, medians)");
    compare("tcp connect+accept (loopback)", || tcp_connections(5_000))?;
    compare("udp sendto (loopback)", || udp_datagrams(200_000))?;
    event_intake(200_000)?;
    Ok(())
}
