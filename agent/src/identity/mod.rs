//! Turning a flow's two ends into identities: the local end from its
//! owning cgroup, the remote end from its address.

pub mod cgroup_path;
pub mod inventory;
pub mod kube;
pub mod model;
pub mod options;
pub mod resolver;

pub use self::{options::IdentityArgs, resolver::IdentityResolver};

use std::net::IpAddr;

use self::model::{Identity, ResolvedEnd};
use crate::flow::Flow;

/// A flow with both ends resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFlow {
    pub flow: Flow,
    /// The socket owner on this node.
    pub local: ResolvedEnd,
    /// The peer.
    pub remote: ResolvedEnd,
}

/// Resolves flows' ends; lookups only (sources update in the background).
pub trait Resolve {
    fn resolve(&self, flow: &Flow) -> ResolvedFlow;
}

/// Identities from what every host has: the owner's cgroup path, and the
/// remote address itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostResolver;

impl Resolve for HostResolver {
    fn resolve(&self, flow: &Flow) -> ResolvedFlow {
        let local = match &flow.owner.path {
            Some(path) => ResolvedEnd::plain(Identity::Cgroup {
                path: path.to_string(),
            }),
            None => ResolvedEnd {
                unresolved: Some(format!("cgroup {} has no known path", flow.owner.id)),
                ..ResolvedEnd::plain(Identity::Unknown {
                    what: format!("cgroup-id/{}", flow.owner.id),
                })
            },
        };
        ResolvedFlow {
            flow: flow.clone(),
            local,
            remote: ResolvedEnd::plain(Identity::External {
                address: canonical_ip(flow.remote.ip()),
            }),
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
