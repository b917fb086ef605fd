//! The kernel's per-CPU accounting of what it offered and what it lost.

use aya::maps::{MapData, PerCpuArray};
use eastwatch_common::counter;
use serde::Serialize;

/// One counter, per CPU and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PerCpu {
    pub total: u64,
    pub per_cpu: Vec<u64>,
}

impl PerCpu {
    fn from_values(values: &[u64]) -> Self {
        Self {
            total: values.iter().sum(),
            per_cpu: values.to_vec(),
        }
    }
}

/// Every kernel counter at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    pub flow_events_offered: PerCpu,
    /// Lost: the flow ring buffer was full.
    pub flow_ring_buffer_full: PerCpu,
    /// Lost folding: the flow map refused an insert (the event still went out).
    pub flow_map_full: PerCpu,
    /// Lost ownership: no storage for a socket's owner stamp.
    pub socket_storage_full: PerCpu,
    pub cgroup_events_offered: PerCpu,
    /// Lost: the cgroup ring buffer was full.
    pub cgroup_ring_buffer_full: PerCpu,
    /// Lost: a cgroup event's fields could not be read.
    pub cgroup_read_failed: PerCpu,
}

impl KernelCounters {
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self, aya::maps::MapError> {
        let read = |index: u32| -> Result<PerCpu, aya::maps::MapError> {
            let values = map.get(&index, 0)?;
            Ok(PerCpu::from_values(&values))
        };
        Ok(Self {
            flow_events_offered: read(counter::FLOW_EVENTS_OFFERED)?,
            flow_ring_buffer_full: read(counter::FLOW_RINGBUF_FULL)?,
            flow_map_full: read(counter::FLOW_MAP_FULL)?,
            socket_storage_full: read(counter::SOCKET_STORAGE_FULL)?,
            cgroup_events_offered: read(counter::CGROUP_EVENTS_OFFERED)?,
            cgroup_ring_buffer_full: read(counter::CGROUP_RINGBUF_FULL)?,
            cgroup_read_failed: read(counter::CGROUP_READ_FAILED)?,
        })
    }

    /// The sum of every loss counter.
    pub fn total_lost(&self) -> u64 {
        self.losses().iter().map(|(_, c)| c.total).sum()
    }

    /// Loss counters by name.
    pub fn losses(&self) -> [(&'static str, &PerCpu); 5] {
        [
            ("flow_ring_buffer_full", &self.flow_ring_buffer_full),
            ("flow_map_full", &self.flow_map_full),
            ("socket_storage_full", &self.socket_storage_full),
            ("cgroup_ring_buffer_full", &self.cgroup_ring_buffer_full),
            ("cgroup_read_failed", &self.cgroup_read_failed),
        ]
    }
}
