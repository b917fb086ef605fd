//! Builds the eBPF object with the pinned nightly and embeds it (OUT_DIR).

use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "eastwatch-ebpf")
        .ok_or_else(|| anyhow!("the eastwatch-ebpf package is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let toolchain = pinned_toolchain(root_dir.as_std_path())?;
    println!("cargo:rerun-if-changed={root_dir}/rust-toolchain.toml");
    // aya-build forwards every line the nested cargo prints as a warning;
    // keep it to real diagnostics.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// The `channel` of ebpf/rust-toolchain.toml.
fn pinned_toolchain(ebpf_dir: &Path) -> anyhow::Result<String> {
    let path = ebpf_dir.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("{}: no channel", path.display()))
}
