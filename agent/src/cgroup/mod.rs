//! cgroup v2: where the hierarchy is mounted and which path each id names.

pub mod mount;
pub mod registry;

pub use mount::Cgroup2Mount;
pub use registry::CgroupRegistry;
