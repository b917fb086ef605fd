//! Turning a flow's two ends into identities: the local end from its
//! owning cgroup, the remote end from its address.

pub mod cgroup_path;
pub mod inventory;
pub mod kube;
pub mod options;
pub mod resolver;
pub mod site;

pub use self::{options::IdentityArgs, resolver::IdentityResolver, site::Site};
