//! Network namespaces made with iproute2, deleted on drop.

use std::{
    io,
    net::UdpSocket,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    process::Command,
};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up.
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    pub fn new() -> Self {
        Self::with_prefix("ew")
    }

    /// A namespace named `<prefix><unique>`.
    pub fn with_prefix(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// The inode `ls -l /proc/PID/ns/net` shows for members.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.handle())
            .expect("netns handle")
            .ino()
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Default for TestNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair, each end with an IPv4 and an IPv6
/// address (`10.77.0.1`/`fd77::1` and `.2`/`::2`). The addresses exist only
/// inside the two namespaces.
pub struct VethPair {
    pub a: TestNetns,
    pub b: TestNetns,
}

impl VethPair {
    pub const A4: &str = "10.77.0.1";
    pub const B4: &str = "10.77.0.2";
    pub const A6: &str = "fd77::1";
    pub const B6: &str = "fd77::2";

    pub fn new() -> Self {
        let (a, b) = (TestNetns::new(), TestNetns::new());
        link(&a, &b, [(Self::A4, Self::A6), (Self::B4, Self::B6)]);
        Self { a, b }
    }
}

/// Joins `a` and `b` with a veth pair, each end with its IPv4 (/24) and
/// IPv6 (/64) address from `addresses`.
pub fn link(a: &TestNetns, b: &TestNetns, addresses: [(&str, &str); 2]) {
    let (va, vb) = (format!("{}a", a.name()), format!("{}b", b.name()));
    ip(&[
        "link",
        "add",
        &va,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.name(),
    ]);
    for ((ns, dev), (v4, v6)) in [(a, &va), (b, &vb)].into_iter().zip(addresses) {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
}

impl Default for VethPair {
    fn default() -> Self {
        Self::new()
    }
}

/// Namespaces on one bridge (in a hub namespace of its own), member `i`
/// with `10.78.0.<i+1>/24` and `fd78::<i+1>/64`. The addresses exist only
/// inside these namespaces.
pub struct Lan {
    pub members: Vec<TestNetns>,
    _hub: TestNetns,
}

impl Lan {
    pub fn new(members: usize) -> Self {
        let hub = TestNetns::new();
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["link", "set", "br0", "up"]);
        let mut list = Vec::new();
        for i in 0..members {
            let ns = TestNetns::new();
            let (h, m) = (format!("{}h", ns.name()), format!("{}m", ns.name()));
            ip(&[
                "link",
                "add",
                &h,
                "netns",
                hub.name(),
                "type",
                "veth",
                "peer",
                "name",
                &m,
                "netns",
                ns.name(),
            ]);
            hub.ip(&["link", "set", &h, "master", "br0"]);
            hub.ip(&["link", "set", &h, "up"]);
            ns.ip(&["addr", "add", &format!("{}/24", Self::v4(i)), "dev", &m]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/64", Self::v6(i)),
                "dev",
                &m,
                "nodad",
            ]);
            ns.ip(&["link", "set", &m, "up"]);
            list.push(ns);
        }
        Self {
            members: list,
            _hub: hub,
        }
    }

    pub fn v4(i: usize) -> String {
        format!("10.78.0.{}", i + 1)
    }

    pub fn v6(i: usize) -> String {
        format!("fd78::{}", i + 1)
    }

    /// Member `i`'s interface (inside its namespace).
    pub fn device(&self, i: usize) -> String {
        format!("{}m", self.members[i].name())
    }
}

/// Moves the calling process (single-threaded) into a new network
/// namespace that nothing pins: it is gone when the process exits. Its
/// loopback comes up, as `ip link set lo up` would.
pub fn unshare_with_loopback() -> io::Result<()> {
    // SAFETY: unshare has no memory effects; callers are single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Any AF_INET socket serves for the ioctl; the wildcard needs no
    // address to exist.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: an ifreq is plain data; every field is zeroed first.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: a valid socket and a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The inode of the calling process's network namespace.
pub fn own_inode() -> io::Result<u64> {
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino())
}
