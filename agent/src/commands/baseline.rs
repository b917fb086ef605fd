//! `eastwatch baseline ...`: the tools on baseline files, printed.

use std::{process::ExitCode, time::SystemTime};

use anyhow::Context as _;
use eastwatch_policy::{
    baseline::{format::json_schema, matcher::Verdict},
    file::write_atomic,
    tools,
};
use serde::Serialize;

use crate::cli::{BaselineArgs, OutputFormat, Tool};

pub async fn run(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    match args.command {
        Tool::Lint {
            files,
            deny_warnings,
        } => {
            let lint = tools::lint(&files, now);
            for diagnostic in &lint.diagnostics {
                println!("{diagnostic}");
            }
            eprintln!(
                "{} file(s): {} error(s), {} warning(s)",
                files.len(),
                lint.errors,
                lint.warnings
            );
            Ok(exit_code(lint.passes(deny_warnings)))
        }
        Tool::Diff { old, new, format } => {
            let diff = tools::diff(&tools::load_doc(&old)?, &tools::load_doc(&new)?);
            print(format, &diff, tools::diff_text)?;
            Ok(ExitCode::SUCCESS)
        }
        Tool::Merge { files, out, name } => {
            let merged = tools::merge_files(&files, name.as_deref(), now)?;
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
            let explanation = tools::explain_path(&file, &from, &to, &port, now)?;
            print(format, &explanation, tools::explanation_text)?;
            Ok(exit_code(explanation.verdict == Verdict::Allowed))
        }
        Tool::Report {
            file,
            evidence,
            format,
        } => {
            let report = tools::report_files(&file, &evidence, now)?;
            print(format, &report, tools::privilege_text)?;
            Ok(ExitCode::SUCCESS)
        }
        Tool::Schema => {
            print!("{}", json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Tool::Export(args) => super::policies::export(args).await,
        Tool::Graph(args) => super::policies::graph(args),
    }
}

/// `value` as text for people, or as pretty JSON.
fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    text: fn(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Text => print!("{}", text(value)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
