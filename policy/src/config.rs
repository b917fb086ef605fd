//! The agent's config file for `eastwatch run`: which local workloads
//! learn and which are monitored (per-scope modes), and where the baseline
//! and learn outputs live. Relative paths are relative to the config file.
//!
//! ```yaml
//! apiVersion: eastwatch.io/v1
//! kind: AgentConfig
//! spec:
//!   defaultMode: monitor
//!   scopes:
//!     - mode: learn
//!       match: {namespace: team-new}
//!   baseline: baseline.yaml
//!   learn: {out: learned.yaml, evidence: evidence.json, checkpoint: learn.checkpoint.json}
//!   monitor: {window: 10m, fanOutThreshold: 10, alertsFile: alerts.jsonl}
//! ```

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    alert::Mode,
    baseline::{
        diag::{Diagnostic, Rejected},
        format::{API_VERSION, Located, Pos, Selector},
        parse,
        selector::SelectorMatcher,
    },
    identity::Identity,
};

pub const CONFIG_KIND: &str = "AgentConfig";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScopeMode {
    Learn,
    #[default]
    Monitor,
}

impl From<ScopeMode> for Mode {
    fn from(mode: ScopeMode) -> Self {
        match mode {
            ScopeMode::Learn => Mode::Learn,
            ScopeMode::Monitor => Mode::Monitor,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfigDoc {
    pub api_version: Located<String>,
    pub kind: Located<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    pub spec: AgentSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// The mode of every local end no scope matches.
    #[serde(default)]
    pub default_mode: ScopeMode,
    /// First match wins; matched against this node's end of each flow.
    #[serde(default)]
    pub scopes: Vec<Located<Scope>>,
    /// The baseline monitored scopes are judged against.
    #[serde(default)]
    pub baseline: Option<Located<String>>,
    #[serde(default)]
    pub learn: LearnSection,
    #[serde(default)]
    pub monitor: MonitorSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    pub mode: ScopeMode,
    #[serde(rename = "match")]
    pub selector: Located<Selector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LearnSection {
    pub out: Option<String>,
    pub evidence: Option<String>,
    pub checkpoint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitorSection {
    /// e.g. `10m`.
    pub window: Option<Located<String>>,
    pub fan_out_threshold: Option<usize>,
    pub alerts_file: Option<String>,
}

/// Per-scope modes, checked.
#[derive(Debug, Clone)]
pub struct Scopes {
    pub default: Mode,
    pub rules: Vec<(SelectorMatcher, Mode)>,
}

impl Scopes {
    pub fn all(mode: Mode) -> Self {
        Self {
            default: mode,
            rules: Vec::new(),
        }
    }

    /// The mode for a flow whose local end is `local`.
    pub fn mode_for(&self, local: &Identity) -> Mode {
        self.rules
            .iter()
            .find(|(selector, _)| selector.matches(local))
            .map_or(self.default, |(_, mode)| *mode)
    }

    pub fn any(&self, mode: Mode) -> bool {
        self.default == mode || self.rules.iter().any(|(_, m)| *m == mode)
    }
}

/// A checked config file.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub scopes: Scopes,
    pub baseline: Option<PathBuf>,
    pub learn_out: Option<PathBuf>,
    pub evidence: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub window: Option<Duration>,
    pub fan_out_threshold: Option<usize>,
    pub alerts_file: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<AgentConfig, Rejected> {
    let (doc, _) = parse::read::<AgentConfigDoc>(path).map_err(Rejected)?;
    check(doc, path)
}

/// Parses and checks config text as if read from `path`.
pub fn from_str(text: &str, path: &Path) -> Result<AgentConfig, Rejected> {
    let doc =
        parse::from_str::<AgentConfigDoc>(text, &path.display().to_string()).map_err(Rejected)?;
    check(doc, path)
}

fn check(doc: AgentConfigDoc, path: &Path) -> Result<AgentConfig, Rejected> {
    let file = path.display().to_string();
    let mut errors = Vec::new();
    let mut error = |at: Option<Pos>, message: String| {
        errors.push(Diagnostic::error(&file, at, message));
    };
    if doc.api_version.value != API_VERSION {
        error(
            doc.api_version.at,
            format!(
                "apiVersion {:?} is not {API_VERSION}",
                doc.api_version.value
            ),
        );
    }
    if doc.kind.value != CONFIG_KIND {
        error(
            doc.kind.at,
            format!("kind {:?} is not {CONFIG_KIND}", doc.kind.value),
        );
    }
    let scopes = check_scopes(&doc.spec, &mut error);
    let window = check_window(&doc.spec.monitor, &mut error);
    if scopes.any(Mode::Monitor) && doc.spec.baseline.is_none() {
        error(
            None,
            "spec.baseline is required when any scope monitors".into(),
        );
    }
    if scopes.any(Mode::Learn) && doc.spec.learn.out.is_none() {
        error(
            None,
            "spec.learn.out is required when any scope learns".into(),
        );
    }
    if !errors.is_empty() {
        return Err(Rejected(errors));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| dir.join(p);
    let spec = &doc.spec;
    Ok(AgentConfig {
        scopes,
        baseline: spec.baseline.as_ref().map(|b| resolve(b)),
        learn_out: spec.learn.out.as_deref().map(resolve),
        evidence: spec.learn.evidence.as_deref().map(resolve),
        checkpoint: spec.learn.checkpoint.as_deref().map(resolve),
        window,
        fan_out_threshold: spec.monitor.fan_out_threshold,
        alerts_file: spec.monitor.alerts_file.as_deref().map(resolve),
    })
}

/// The scopes' selectors compiled, in order; each that does not compile
/// is an error.
fn check_scopes(spec: &AgentSpec, error: &mut dyn FnMut(Option<Pos>, String)) -> Scopes {
    let mut rules = Vec::new();
    for (index, scope) in spec.scopes.iter().enumerate() {
        match SelectorMatcher::compile(&scope.selector) {
            Ok(selector) => rules.push((selector, Mode::from(scope.mode))),
            Err(why) => error(
                scope.selector.at.or(scope.at),
                format!("scopes[{index}].match: {why}"),
            ),
        }
    }
    Scopes {
        default: spec.default_mode.into(),
        rules,
    }
}

/// `monitor.window`, a duration above zero.
fn check_window(
    monitor: &MonitorSection,
    error: &mut dyn FnMut(Option<Pos>, String),
) -> Option<Duration> {
    let text = monitor.window.as_ref()?;
    match humantime::parse_duration(text) {
        Ok(window) if !window.is_zero() => Some(window),
        _ => {
            error(
                text.at,
                format!(
                    "monitor.window {:?} is not a duration such as 10m",
                    text.value
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config the DaemonSet ships (deploy/kustomize) is one the agent
    /// accepts.
    #[test]
    fn the_deployed_agent_config_loads() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kustomize/configmap-config.yaml");
        let text = std::fs::read_to_string(&manifest).expect("configmap");
        let configmap: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        let agent = configmap["data"]["agent.yaml"]
            .as_str()
            .expect("agent.yaml");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, agent).expect("write");
        let config = load(&path).unwrap_or_else(|rejected| panic!("{rejected}"));
        assert_eq!(
            config.baseline.as_deref(),
            Some(std::path::Path::new(
                "/etc/eastwatch/baseline/baseline.yaml"
            ))
        );
    }
}
