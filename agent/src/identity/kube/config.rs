//! Finding a cluster the way kubectl does: an explicit kubeconfig, the pod's
//! service account (in-cluster), `KUBECONFIG`, then `~/.kube/config`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::warn;

/// The result of looking for a cluster.
pub enum Discovery {
    /// Kubernetes is not used; `reason` says why.
    Off { reason: String },
    Found {
        config: Box<kube::Config>,
        /// Where the config came from (a path, or `in-cluster`).
        source: String,
        /// The current context's cluster, when a kubeconfig names one.
        cluster_name: Option<String>,
    },
}

const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Looks for a cluster. A `--kubeconfig` that cannot be used is an error;
/// a broken file found by default turns Kubernetes off with the reason.
pub async fn discover(disabled: bool, explicit: Option<&Path>) -> anyhow::Result<Discovery> {
    if disabled {
        return Ok(Discovery::Off {
            reason: "turned off with --no-kubernetes".into(),
        });
    }
    if let Some(path) = explicit {
        return from_file(path)
            .await
            .with_context(|| format!("--kubeconfig {}", path.display()));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new(SERVICE_ACCOUNT_TOKEN).exists()
    {
        return Ok(match kube::Config::incluster() {
            Ok(config) => Discovery::Found {
                config: Box::new(config),
                source: "in-cluster service account".into(),
                cluster_name: None,
            },
            Err(err) => off_because(format!("in-cluster service account: {err}")),
        });
    }
    if let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let found = async {
            let kubeconfig = Kubeconfig::from_env()?.context("KUBECONFIG names no file")?;
            found(
                kubeconfig,
                format!("KUBECONFIG={}", value.to_string_lossy()),
            )
            .await
        };
        return Ok(found
            .await
            .unwrap_or_else(|err| off_because(format!("KUBECONFIG: {err:#}"))));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".kube/config");
        if path.exists() {
            return Ok(from_file(&path)
                .await
                .unwrap_or_else(|err| off_because(format!("{}: {err:#}", path.display()))));
        }
    }
    Ok(Discovery::Off {
        reason:
            "no cluster config found (no in-cluster service account, KUBECONFIG or ~/.kube/config)"
                .into(),
    })
}

fn off_because(reason: String) -> Discovery {
    warn!(%reason, "Kubernetes identity is off");
    Discovery::Off { reason }
}

async fn from_file(path: &Path) -> anyhow::Result<Discovery> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    found(kubeconfig, path.display().to_string()).await
}

async fn found(kubeconfig: Kubeconfig, source: String) -> anyhow::Result<Discovery> {
    let cluster_name = kubeconfig.current_context.as_ref().and_then(|current| {
        kubeconfig
            .contexts
            .iter()
            .find(|c| &c.name == current)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
    });
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Discovery::Found {
        config: Box::new(config),
        source,
        cluster_name,
    })
}
