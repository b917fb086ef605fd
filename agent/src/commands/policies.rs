//! `eastwatch baseline export` (NetworkPolicy / CiliumNetworkPolicy, and
//! `--check` of observed flows against them) and `eastwatch baseline
//! graph` (the service map): reading files and the cluster, then the pure
//! generators in the policy crate's `tools::{netpol, graph}`.

use std::{path::Path, process::ExitCode, time::SystemTime};

use anyhow::Context as _;
use eastwatch_policy::{
    baseline::{diag::Diagnostic, validate},
    file::write_atomic,
    tools::{
        graph,
        netpol::{self, ClusterFacts, ExportOptions, Flavor},
        observed::{self, Observed},
    },
};

use crate::{
    cli::{ExportArgs, GraphArgs, GraphFormat, OutputFormat, PolicyFormat},
    identity::kube::{
        config::{Discovery, discover},
        snapshot,
    },
};

fn diagnostics(errors: Vec<Diagnostic>) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

fn load_baseline(path: &Path, now: SystemTime) -> anyhow::Result<validate::Baseline> {
    let (baseline, _) =
        validate::load(path, now).map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    Ok(baseline)
}

fn read_observed(path: &Path, want_evidence: bool) -> anyhow::Result<Observed> {
    let observed = observed::read(path).map_err(diagnostics)?;
    anyhow::ensure!(
        observed.evidence == want_evidence,
        "{} is {}, not {}",
        path.display(),
        if observed.evidence {
            "learn evidence"
        } else {
            "an alerts file"
        },
        if want_evidence {
            "learn evidence"
        } else {
            "an alerts file"
        }
    );
    Ok(observed)
}

/// Pod labels and Services: the cluster's, then the evidence's labels for
/// workloads the cluster does not report.
async fn cluster_facts(args: &ExportArgs) -> anyhow::Result<ClusterFacts> {
    let mut facts = ClusterFacts::default();
    match discover(args.no_kubernetes, args.kubeconfig.as_deref()).await? {
        Discovery::Found {
            mut config, source, ..
        } => {
            // One read: an API server that fails says so now, not after
            // the client's minutes of retries.
            config.default_retry = false;
            let client = kube::Client::try_from(*config).context("Kubernetes client")?;
            facts = snapshot::read(client, &format!("the cluster ({source})")).await?;
        }
        Discovery::Off { reason } => eprintln!("no cluster to read pod labels from: {reason}"),
    }
    if let Some(path) = &args.evidence {
        let observed = read_observed(path, true)?;
        let identities = observed.flows.iter().flat_map(|f| [&f.from, &f.to]);
        facts.add(ClusterFacts::from_identities(
            &format!("evidence {}", path.display()),
            identities,
        ));
    }
    Ok(facts)
}

fn write_or_print(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => Ok(write_atomic(path, text.as_bytes())?),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let baseline = load_baseline(&args.file, now)?;
    let facts = cluster_facts(&args).await?;
    let options = ExportOptions {
        flavor: match args.format {
            PolicyFormat::Networkpolicy => Flavor::NetworkPolicy,
            PolicyFormat::Ciliumnetworkpolicy => Flavor::CiliumNetworkPolicy,
        },
        egress: args.egress,
        now,
    };
    let export = netpol::plan(&baseline, &facts, &options);
    for warning in &export.warnings {
        eprintln!("{warning}");
    }
    let yaml = netpol::to_yaml(&export).map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "{} {}(s) for {} of {} edges; pod labels from {}; {} warning(s)",
        export.policies.len(),
        options.flavor.kind(),
        baseline.rules.len() - export.warned_edges.len(),
        baseline.rules.len(),
        if facts.source.is_empty() {
            "nowhere"
        } else {
            &facts.source
        },
        export.warnings.len()
    );
    if args.check.is_empty() {
        write_or_print(args.out.as_deref(), &yaml)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(out) = &args.out {
        write_or_print(Some(out), &yaml)?;
    }
    let mut flows = Vec::new();
    for path in &args.check {
        let observed = observed::read(path).map_err(diagnostics)?;
        for note in &observed.truncated_scans {
            eprintln!("{note}; the others are not checked");
        }
        flows.extend(observed.flows);
    }
    let report = netpol::check(&export, &baseline, &facts, &flows, now);
    match args.check_format {
        OutputFormat::Text => print!("{}", netpol::check_text(&report)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.blocked > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let baseline = load_baseline(&args.file, now)?;
    let evidence = match &args.evidence {
        Some(path) => Some(read_observed(path, true)?.flows),
        None => None,
    };
    let mut alerts = Vec::new();
    for path in &args.alerts {
        alerts.extend(read_observed(path, false)?.flows);
    }
    let map = graph::build(&baseline, evidence.as_deref(), &alerts, now);
    let text = match args.format {
        GraphFormat::Html => graph::html(&map),
        GraphFormat::Dot => graph::dot(&map),
        GraphFormat::Mermaid => graph::mermaid(&map),
    };
    write_or_print(args.out.as_deref(), &text)?;
    if let Some(out) = &args.out {
        eprintln!(
            "map of {} identities and {} edges written to {}",
            map.nodes.len(),
            map.edges.len(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
