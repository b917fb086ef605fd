//! `eastwatch baseline ...`: the tools on baseline files, printed.

use std::{path::Path, process::ExitCode, time::SystemTime};

use anyhow::Context as _;
use eastwatch_policy::{
    baseline::{
        diag::Diagnostic,
        format::{self, BaselineDoc},
        matcher::{ObservedEdge, Verdict},
        parse, validate,
    },
    file::write_atomic,
    learn::Evidence,
    tools,
};

use crate::cli::{BaselineArgs, OutputFormat, Tool};

fn load_doc(path: &Path) -> anyhow::Result<BaselineDoc> {
    let (doc, _) = parse::read::<BaselineDoc>(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    Ok(doc)
}

fn load_valid(path: &Path) -> anyhow::Result<validate::Baseline> {
    let (baseline, _) = validate::load(path, SystemTime::now())
        .map_err(|rejected| anyhow::anyhow!("{rejected}"))?;
    Ok(baseline)
}

pub fn run(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    match args.command {
        Tool::Lint {
            files,
            deny_warnings,
        } => {
            let (mut errors, mut warnings) = (0, 0);
            for file in &files {
                let diagnostics = match validate::load(file, now) {
                    Ok((_, warnings)) => warnings,
                    Err(rejected) => rejected.0,
                };
                for d in &diagnostics {
                    println!("{d}");
                    if d.is_error() {
                        errors += 1;
                    } else {
                        warnings += 1;
                    }
                }
            }
            eprintln!(
                "{} file(s): {errors} error(s), {warnings} warning(s)",
                files.len()
            );
            Ok(if errors > 0 || (deny_warnings && warnings > 0) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Tool::Diff { old, new, format } => {
            let diff = tools::diff(&load_doc(&old)?, &load_doc(&new)?);
            match format {
                OutputFormat::Text => print!("{}", tools::diff_text(&diff)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&diff)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Tool::Merge { files, out, name } => {
            let mut docs = Vec::new();
            for file in &files {
                // Only valid inputs: a merge must not launder a broken file.
                load_valid(file)?;
                docs.push(load_doc(file)?);
            }
            let name = name.unwrap_or_else(|| docs[0].metadata.name.value.clone());
            let merged = tools::merge(&docs, &name);
            let yaml = merged.to_yaml().context("serializing the baseline")?;
            write_atomic(&out, yaml.as_bytes())?;
            eprintln!(
                "merged {} file(s) into {} ({} edges)",
                files.len(),
                out.display(),
                merged.spec.edges.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Tool::Explain {
            file,
            from,
            to,
            port,
            format,
        } => {
            let baseline = load_valid(&file)?;
            let range =
                validate::PortRange::parse(&port).map_err(|e| anyhow::anyhow!("--port: {e}"))?;
            anyhow::ensure!(
                range.first == range.last,
                "--port names one port, e.g. 5432/tcp"
            );
            let edge = ObservedEdge {
                from: tools::parse_identity(&from).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
                to: tools::parse_identity(&to).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
                port: range.first,
                transport: range.transport,
            };
            let explanation = tools::explain(&baseline, &edge, now);
            match format {
                OutputFormat::Text => print!("{}", tools::explanation_text(&explanation)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
            }
            Ok(if explanation.verdict == Verdict::Allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Tool::Report {
            file,
            evidence,
            format,
        } => {
            let baseline = load_valid(&file)?;
            let evidence: Evidence = serde_json::from_slice(
                &std::fs::read(&evidence)
                    .with_context(|| format!("reading {}", evidence.display()))?,
            )
            .with_context(|| format!("parsing {}", evidence.display()))?;
            let report = tools::privilege_report(&baseline, &evidence, now);
            match format {
                OutputFormat::Text => print!("{}", tools::privilege_text(&report)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Tool::Schema => {
            print!("{}", format::json_schema());
            Ok(ExitCode::SUCCESS)
        }
    }
}
