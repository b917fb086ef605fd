use clap::Parser;
use eastwatch::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts threads: namespaces are per thread.
    let cgroup_namespace = match &cli.command {
        Command::Baseline(_) | Command::Probe(_) => None,
        _ => Some(eastwatch::hostns::join_host_cgroup_namespace()),
    };
    // `init` also routes the `log` records aya-log produces into tracing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .try_init();
    match cgroup_namespace {
        Some(eastwatch::hostns::CgroupNamespace::Joined) => {
            tracing::info!("joined the host's cgroup namespace (PID 1's)")
        }
        Some(eastwatch::hostns::CgroupNamespace::Stayed(err)) => tracing::warn!(
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
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Observe(args) => eastwatch::observe::run(args.options())
                .await
                .map(|()| std::process::ExitCode::SUCCESS),
            Command::Learn(args) => eastwatch::baseline::commands::learn(args).await,
            Command::Monitor(args) => eastwatch::baseline::commands::monitor(args).await,
            Command::Run(args) => eastwatch::baseline::commands::run(args).await,
            Command::Baseline(args) => eastwatch::baseline::commands::tool(args).await,
            Command::Probe(args) => eastwatch::export::health::probe(&args.url, args.timeout)
                .await
                .map(|()| std::process::ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("eastwatch: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
