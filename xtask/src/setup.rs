//! Making a fresh machine able to build and test eastwatch.
//!
//! - the eBPF toolchain pinned in `ebpf/rust-toolchain.toml` (a nightly with
//!   rust-src, for `-Z build-std=core`);
//! - the stock stable toolchain, which the policy crate's tests run on;
//! - bpf-linker built against the LLVM major that nightly uses (22);
//! - Debian packages: that LLVM, and the tools the tests drive.
//!
//! The workspace toolchain itself (`rust-toolchain.toml`) must exist before
//! cargo can build this program: the README's commands start with
//! `rustup toolchain install`, which installs it (rustup does not when
//! `RUSTUP_AUTO_INSTALL=0`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::run;

/// bpf-linker and the LLVM it must be built against. The nightly pinned in
/// ebpf/rust-toolchain.toml uses the same LLVM major.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

/// Debian packages: LLVM for bpf-linker, and what the tests and demo run
/// (ip, nft, curl; chromium renders the service map headless).
fn debian_packages() -> Vec<String> {
    vec![
        format!("llvm-{LLVM_MAJOR}-dev"),
        format!("libpolly-{LLVM_MAJOR}-dev"),
        "zlib1g-dev".into(),
        "libzstd-dev".into(),
        "iproute2".into(),
        "nftables".into(),
        "curl".into(),
        "procps".into(),
        "util-linux".into(),
        "chromium".into(),
    ]
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs whatever is missing. Quick when nothing is.
pub fn ensure(root: &Path) -> anyhow::Result<()> {
    check_os()?;
    ensure_debian_packages()?;
    let toolchain = ebpf_toolchain(root)?;
    ensure_rust_toolchain(&toolchain)?;
    ensure_stable_toolchain()?;
    ensure_bpf_linker(root)?;
    Ok(())
}

fn check_os() -> anyhow::Result<()> {
    let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |name: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let (id, like) = (field("ID"), field("ID_LIKE"));
    if id == "debian" || id == "ubuntu" || like.split_whitespace().any(|l| l == "debian") {
        return Ok(());
    }
    bail!(
        "cargo xtask knows how to set up Debian and Ubuntu (apt); this is `{}`.\n\
         Install by hand: LLVM {LLVM_MAJOR} development files, iproute2, nftables, curl, chromium; \
         then `rustup toolchain install <ebpf/rust-toolchain.toml channel> --component rust-src` \
         and `cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features \
         --features llvm-{LLVM_MAJOR}` with LLVM_PREFIX pointing at LLVM {LLVM_MAJOR}.",
        if id.is_empty() { "an unknown OS" } else { &id }
    )
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn ensure_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<String> = debian_packages()
        .into_iter()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run `cargo xtask setup` as root (or apt-get install them)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

/// The `channel` of ebpf/rust-toolchain.toml.
pub fn ebpf_toolchain(root: &Path) -> anyhow::Result<String> {
    let path = root.join("ebpf/rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("{}: no channel", path.display()))
}

fn rustup() -> Command {
    let mut command = Command::new("rustup");
    // Don't let the workspace toolchain that runs xtask leak into rustup.
    command.env_remove("RUSTUP_TOOLCHAIN");
    command
}

fn ensure_rust_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let sysroot = rustup()
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let has_src = sysroot
        .as_ref()
        .is_some_and(|s| s.join("lib/rustlib/src/rust/library/core").is_dir());
    let has_clippy = sysroot
        .as_ref()
        .is_some_and(|s| s.join("bin/cargo-clippy").exists());
    if has_src && has_clippy {
        return Ok(());
    }
    eprintln!("xtask: installing Rust {toolchain} with rust-src");
    run(rustup().args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src,clippy,rustfmt",
    ]))
}

/// The stock stable toolchain (minimal: rustc and cargo are enough).
fn ensure_stable_toolchain() -> anyhow::Result<()> {
    let installed = rustup()
        .args(["run", "stable", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing the stable Rust toolchain");
    run(rustup().args(["toolchain", "install", "stable", "--profile", "minimal"]))
}

/// Prepends cargo's bin directory (where bpf-linker goes) to PATH for
/// every command this process starts.
pub fn put_cargo_bin_on_path() -> anyhow::Result<()> {
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return Ok(());
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))?;
    // SAFETY: xtask is single-threaded here, before any child starts.
    unsafe { std::env::set_var("PATH", joined) };
    Ok(())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// bpf-linker must report our version and link the LLVM we pinned.
fn bpf_linker_ok(path: &Path) -> bool {
    let version = Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION));
    let llvm = Command::new("ldd").arg(path).output().is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).contains(&format!("libLLVM.so.{LLVM_MAJOR}"))
    });
    version && llvm
}

fn ensure_bpf_linker(root: &Path) -> anyhow::Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    if bpf_linker_ok(&linker) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR}");
    let llvm = PathBuf::from(format!("/usr/lib/llvm-{LLVM_MAJOR}"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![llvm.join("bin")];
    paths.extend(std::env::split_paths(&path));
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .env("LLVM_PREFIX", &llvm)
            .env("PATH", std::env::join_paths(paths)?)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{LLVM_MAJOR}")),
    )?;
    if !bpf_linker_ok(&linker) {
        bail!(
            "{} was installed but does not report version {BPF_LINKER_VERSION} with LLVM {LLVM_MAJOR}",
            linker.display()
        );
    }
    Ok(())
}
