//! eastwatch: an eBPF runtime monitor for east-west traffic.
//!
//! Data flows one way: `kernel` events are decoded, enriched by the
//! `sensor` (cgroup paths from `cgroup`, older sockets from `sockets`) and
//! folded by the `tracker` into flows; the `pipeline` resolves both ends
//! (`identity`), hands each flow to its stage (a printer, or the learner
//! and the judge of the policy crate) and every alert to the `sinks` and
//! `export`. `commands` sets it up from the `cli`. docs/architecture.md
//! walks through it with a diagram.
//!
//! Everything is crate-private but [`main`] and what the integration tests
//! in `agent/tests` drive directly.

mod cgroup;
mod cli;
mod clock;
mod commands;
#[cfg(test)]
mod doc_examples;
mod export;
/// Fuzz targets and their driver (`cargo xtask fuzz`).
#[doc(hidden)]
pub mod fuzz;
mod hostns;
mod identity;
mod kernel;
mod pipeline;
mod privileges;
mod sensor;
mod signal;
mod sinks;
mod sockets;
mod tracker;

use std::process::ExitCode;

use clap::Parser as _;
/// The flow model the sensing half produces, from the policy crate.
use eastwatch_policy::flow;
use tracing_subscriber::EnvFilter;

use self::cli::Cli;
/// For the integration tests: the identity resolver, and the Kubernetes
/// store and conversions its watches fill.
pub use self::{
    identity::{
        IdentityArgs, IdentityResolver,
        kube::{
            convert,
            store::{ClusterState, Record, ResourceKind, SyncState},
        },
    },
    sockets::netns::current_cookie,
};

/// The `eastwatch` binary: parses the command line, sets up the process
/// (the host's cgroup namespace, logging, the runtime) and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.watches_traffic() {
        // Until the loop's handlers are installed (after identity sync and
        // program load), SIGUSR1's default action would kill the agent:
        // ignored until then. Installing the handlers replaces this.
        // SAFETY: setting SIG_IGN has no preconditions; no other thread
        // runs yet.
        unsafe {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        }
    }
    // Before the runtime starts threads: namespaces are per thread.
    let cgroup_namespace = cli
        .command
        .watches_traffic()
        .then(hostns::join_host_cgroup_namespace);
    // `init` also routes the `log` records aya-log produces into tracing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .try_init();
    match cgroup_namespace {
        Some(hostns::CgroupNamespace::Joined) => {
            tracing::info!("joined the host's cgroup namespace (PID 1's)")
        }
        Some(hostns::CgroupNamespace::Stayed(err)) => tracing::warn!(
            %err,
            "cannot join the host's cgroup namespace; cgroup paths may be the container's view"
        ),
        _ => {}
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("eastwatch: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli.command));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("eastwatch: {err:#}");
            ExitCode::FAILURE
        }
    }
}
