//! Loading eastwatch's eBPF object, attaching it, and the handles the agent
//! reads it through.

pub mod batch;
pub mod btf;
pub mod counters;
pub mod decode;
pub mod ports;

use std::{fs::File, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        CgroupSock, CgroupSockAddr, Program, RawTracePoint, SockOps, links::CgroupAttachMode,
    },
};
use eastwatch_common::{FlowKey as WireKey, FlowStats, names, setting};
use thiserror::Error;

use self::btf::{BtfError, CgroupOffsets, KernelBtf, NetnsOffsets};

/// The object built from `ebpf/`, embedded at compile time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eastwatch"));

/// Programs attached to the cgroup v2 root, by ELF name.
const CGROUP_SOCK_ADDR_PROGRAMS: [&str; 6] = [
    "connect4", "connect6", "sendmsg4", "sendmsg6", "recvmsg4", "recvmsg6",
];
const SOCK_CREATE_PROGRAM: &str = "sock_create";
const SOCK_OPS_PROGRAM: &str = "tcp_outcomes";
/// Raw tracepoints, named as the tracepoints they attach to.
const CGROUP_TRACEPOINTS: [&str; 2] = ["cgroup_mkdir", "cgroup_rmdir"];

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("detaching: {0}")]
    Detach(aya::programs::ProgramError),
    #[error("the eBPF object has no `{0}`")]
    Missing(&'static str),
    #[error("opening the cgroup v2 root {path}: {source}")]
    CgroupRoot {
        path: String,
        source: std::io::Error,
    },
    #[error("reading kernel BTF (needed to name cgroups and network namespaces): {0}")]
    Btf(#[from] BtfError),
}

/// Sizes of the kernel's maps.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Bytes in the flow ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// Edges the kernel folds before evicting the least recently used.
    pub flow_map_entries: u32,
    /// Start with kernel diagnostics (aya-log) switched on.
    pub diagnostics: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 4 << 20,
            flow_map_entries: 65536,
            diagnostics: false,
        }
    }
}

/// Loads program `$name` of type `$ty` and attaches it at the cgroup v2
/// root. Single mode: aya passes other modes as link flags, which the
/// kernel rejects; link-based attachments coexist with other programs.
macro_rules! attach_at_root {
    ($ebpf:expr, $ty:ty, $name:expr, $root:expr) => {{
        let name = $name;
        let program: &mut $ty = program_mut(&mut $ebpf, name)?;
        let program_error = |source| KernelError::Program { name, source };
        program.load().map_err(program_error)?;
        program
            .attach($root, CgroupAttachMode::Single)
            .map_err(program_error)?;
    }};
}

/// The ring buffers the kernel streams events on.
pub struct RingBuffers {
    pub flow_events: RingBuf<MapData>,
    pub cgroup_events: RingBuf<MapData>,
}

/// The loaded, attached programs and the maps the agent reads.
pub struct KernelProbe {
    /// Keeps the programs (and their links) alive; dropping detaches them.
    ebpf: Ebpf,
    pub flows: HashMap<MapData, WireKey, FlowStats>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Network namespace cookie → inode, as the kernel read it.
    pub netns_inodes: HashMap<MapData, u64, u32>,
    settings: Array<MapData, u32>,
}

impl KernelProbe {
    /// Loads the object and attaches every program at `cgroup_root`.
    pub fn attach(
        cgroup_root: &Path,
        config: ProbeConfig,
    ) -> Result<(Self, RingBuffers), KernelError> {
        let btf = KernelBtf::from_sys_fs()?;
        let offsets = CgroupOffsets::resolve(&btf)?;
        let netns = NetnsOffsets::resolve(&btf)?;
        let ephemeral = ports::EphemeralPorts::of_host();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::FLOW_EVENTS, config.ring_buffer_bytes)
            .map_max_entries(names::FLOWS, config.flow_map_entries)
            .override_global(names::CGROUP_KN_OFFSET, &offsets.cgroup_kn, true)
            .override_global(names::CGROUP_ROOT_OFFSET, &offsets.cgroup_root, true)
            .override_global(names::KERNFS_NODE_ID_OFFSET, &offsets.kernfs_node_id, true)
            .override_global(
                names::CGROUP_ROOT_HIERARCHY_ID_OFFSET,
                &offsets.cgroup_root_hierarchy_id,
                true,
            )
            .override_global(names::SOCK_NET_OFFSET, &netns.sock_net, true)
            .override_global(names::NET_INUM_OFFSET, &netns.net_inum, true)
            .override_global(names::EPHEMERAL_PORT_FIRST, &ephemeral.first, true)
            .override_global(names::EPHEMERAL_PORT_LAST, &ephemeral.last, true)
            .load(OBJECT)?;

        let root = File::open(cgroup_root).map_err(|source| KernelError::CgroupRoot {
            path: cgroup_root.display().to_string(),
            source,
        })?;
        // Tracepoints first: a cgroup made while the rest attaches is named.
        for name in CGROUP_TRACEPOINTS {
            let program: &mut RawTracePoint = program_mut(&mut ebpf, name)?;
            let program_error = |source| KernelError::Program { name, source };
            program.load().map_err(program_error)?;
            program.attach(name).map_err(program_error)?;
        }
        // Then the owner stamp, before anything reads it.
        attach_at_root!(ebpf, CgroupSock, SOCK_CREATE_PROGRAM, &root);
        for name in CGROUP_SOCK_ADDR_PROGRAMS {
            attach_at_root!(ebpf, CgroupSockAddr, name, &root);
        }
        attach_at_root!(ebpf, SockOps, SOCK_OPS_PROGRAM, &root);

        let rings = RingBuffers {
            flow_events: take_map(&mut ebpf, names::FLOW_EVENTS)?,
            cgroup_events: take_map(&mut ebpf, names::CGROUP_EVENTS)?,
        };
        let mut probe = Self {
            flows: take_map(&mut ebpf, names::FLOWS)?,
            counters: take_map(&mut ebpf, names::COUNTERS)?,
            netns_inodes: take_map(&mut ebpf, names::NETNS_INODES)?,
            settings: take_map(&mut ebpf, names::SETTINGS)?,
            ebpf,
        };
        probe.set_diagnostics(config.diagnostics)?;
        Ok((probe, rings))
    }

    /// Every entry of the kernel's flow table: in batches where the kernel
    /// supports it, else key by key (entries evicted mid-walk are skipped).
    pub fn flow_table(&self) -> Vec<(WireKey, FlowStats)> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        match batch::lookup_all(self.flows.map().fd().as_fd(), 4096) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::debug!(%err, "batch lookup unavailable; walking the flow table");
                self.flows.iter().filter_map(Result::ok).collect()
            }
        }
    }

    /// Switches kernel diagnostics (aya-log) on or off while running.
    pub fn set_diagnostics(&mut self, enabled: bool) -> Result<(), KernelError> {
        self.settings
            .set(setting::DIAGNOSTICS, &u32::from(enabled), 0)
            .map_err(|source| KernelError::Map {
                name: names::SETTINGS,
                source,
            })
    }

    /// Detaches and unloads every program; the maps stay readable, so
    /// what the kernel produced until now can still be drained exactly.
    pub fn detach(&mut self) -> Result<(), KernelError> {
        for (_, program) in self.ebpf.programs_mut() {
            let unloaded = match program {
                Program::CgroupSock(p) => p.unload(),
                Program::CgroupSockAddr(p) => p.unload(),
                Program::SockOps(p) => p.unload(),
                Program::RawTracePoint(p) => p.unload(),
                _ => Ok(()),
            };
            // Already unloaded is fine; anything else is worth knowing.
            if let Err(err) = unloaded
                && !matches!(err, aya::programs::ProgramError::NotLoaded)
            {
                return Err(KernelError::Detach(err));
            }
        }
        Ok(())
    }

    /// The object, for aya-log's reader.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Names of the attached programs, for the start-up report.
    pub fn program_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ebpf
            .programs()
            .map(|(name, _)| name.to_owned())
            .collect();
        names.sort();
        names
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    ebpf.take_map(name)
        .ok_or(KernelError::Missing(name))?
        .try_into()
        .map_err(|source| KernelError::Map { name, source })
}
