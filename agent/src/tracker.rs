//! The agent's table of flows: merges new-flow events, the kernel's running
//! counts and the start-up scan into one total per flow.
//!
//! Flows are tracked under their *logical* key (the owner as resolved by
//! the agent). Several kernel keys can feed one flow: the kernel may not
//! know the owner of a socket accepted on a listener older than the agent,
//! and an LRU-evicted edge comes back as a fresh kernel entry counting from
//! one again.

use std::time::{Instant, SystemTime};

// Keys carry attacker-chosen addresses and ports: a seeded hasher, but a
// fast one; this table is walked for every entry of the kernel's table.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::flow::{Flow, FlowKey};

struct Tracked {
    flow: Flow,
    /// Occurrences no longer in any kernel entry (evicted, pre-existing).
    retired: u64,
    /// Kernel keys feeding this flow and their counts at the last look
    /// (almost always one).
    kernel: Vec<(FlowKey, u64)>,
    reported: u64,
    last_change: Instant,
    /// The latest occurrence's time, as the kernel stamped it: what a
    /// count update is resolved at (identities as of the flow's time).
    last_seen: SystemTime,
}

impl Tracked {
    fn total(&self) -> u64 {
        self.retired + self.kernel.iter().map(|(_, count)| count).sum::<u64>()
    }

    /// The last count seen for `key`, made 0 if the key is new here.
    fn kernel_count(&mut self, key: FlowKey) -> &mut u64 {
        let at = match self.kernel.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.kernel.push((key, 0));
                self.kernel.len() - 1
            }
        };
        &mut self.kernel[at].1
    }
}

/// Totals that moved since they were last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct CountUpdate {
    pub flow: Flow,
    pub delta: u64,
    /// When the latest of these occurrences happened (the kernel's time).
    pub last_seen: SystemTime,
}

pub struct FlowTracker {
    flows: HashMap<FlowKey, Tracked>,
    logical_of: HashMap<FlowKey, FlowKey>,
    /// Kernel keys seen in the map but not (yet) through an event.
    unseen: HashSet<FlowKey>,
}

/// What became of a new-flow event.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// A flow the agent did not know.
    New(Box<Flow>),
    /// More of a known flow (the next count update reports it).
    Known,
}

impl Default for FlowTracker {
    fn default() -> Self {
        Self {
            flows: HashMap::new(),
            logical_of: HashMap::new(),
            unseen: HashSet::new(),
        }
    }
}

impl FlowTracker {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Takes in a flow the kernel reported (`kernel_key` is the key as the
    /// kernel folds it) or the start-up scan found (`kernel_key` None).
    pub fn admit(&mut self, kernel_key: Option<FlowKey>, flow: Flow, now: Instant) -> Admission {
        let logical = flow.key;
        if let Some(kernel_key) = kernel_key {
            self.unseen.remove(&kernel_key);
            self.logical_of.insert(kernel_key, logical);
        }
        match self.flows.get_mut(&logical) {
            Some(tracked) => {
                match kernel_key {
                    // A kernel entry we knew came back as new: it was
                    // evicted (or could not be folded); keep what it had.
                    Some(key) => {
                        let count = tracked.kernel_count(key);
                        let before = std::mem::replace(count, flow.count);
                        tracked.retired += before;
                    }
                    None => tracked.retired += flow.count,
                }
                tracked.last_change = now;
                tracked.last_seen = tracked.last_seen.max(flow.first_seen);
                Admission::Known
            }
            None => {
                let mut tracked = Tracked {
                    last_seen: flow.first_seen,
                    flow,
                    retired: 0,
                    kernel: Vec::new(),
                    reported: 0,
                    last_change: now,
                };
                match kernel_key {
                    Some(key) => tracked.kernel.push((key, tracked.flow.count)),
                    None => tracked.retired = tracked.flow.count,
                }
                tracked.reported = tracked.total();
                tracked.flow.count = tracked.reported;
                let new = Box::new(tracked.flow.clone());
                self.flows.insert(logical, tracked);
                Admission::New(new)
            }
        }
    }

    /// Records the kernel's count for a key and its latest occurrence's
    /// time. Returns true when the key has no flow yet: its event is lost
    /// or still in flight.
    pub fn observe_count(
        &mut self,
        kernel_key: FlowKey,
        count: u64,
        last_seen: SystemTime,
        now: Instant,
    ) -> bool {
        let Some(logical) = self.logical_of.get(&kernel_key) else {
            return true;
        };
        let Some(tracked) = self.flows.get_mut(logical) else {
            return true;
        };
        let last = tracked.kernel_count(kernel_key);
        let before = std::mem::replace(last, count);
        if count < before {
            // Evicted and re-inserted between two looks.
            tracked.retired += before;
        }
        if count != before {
            tracked.last_change = now;
            tracked.last_seen = tracked.last_seen.max(last_seen);
        }
        false
    }

    /// Keys absent from the flow table twice in a row are lost events: the
    /// first sighting only marks them, since an event can be in flight.
    pub fn confirm_lost(&mut self, missing: impl IntoIterator<Item = FlowKey>) -> Vec<FlowKey> {
        let mut lost = Vec::new();
        let mut still = HashSet::new();
        for key in missing {
            if self.logical_of.contains_key(&key) {
                continue;
            }
            if self.unseen.contains(&key) {
                lost.push(key);
            } else {
                still.insert(key);
            }
        }
        self.unseen = still;
        lost
    }

    /// Flows whose total grew since their last report.
    pub fn take_updates(&mut self) -> Vec<CountUpdate> {
        let mut updates = Vec::new();
        for tracked in self.flows.values_mut() {
            let total = tracked.total();
            if total > tracked.reported {
                let delta = total - tracked.reported;
                tracked.reported = total;
                tracked.flow.count = total;
                updates.push(CountUpdate {
                    flow: tracked.flow.clone(),
                    delta,
                    last_seen: tracked.last_seen,
                });
            }
        }
        updates.sort_by_key(|u| u.flow.key);
        updates
    }

    /// Forgets flows idle since `cutoff`, keeping memory bounded.
    pub fn prune(&mut self, cutoff: Instant) -> usize {
        let before = self.flows.len();
        self.flows
            .retain(|_, tracked| tracked.last_change >= cutoff);
        let flows = &self.flows;
        self.logical_of
            .retain(|_, logical| flows.contains_key(logical));
        before - self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, SocketAddr},
        time::Duration,
    };

    use super::*;
    use crate::flow::{Direction, Outcome, Transport};

    fn key(cgroup_id: u64) -> FlowKey {
        FlowKey {
            cgroup_id,
            netns_cookie: 1,
            remote: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            service_port: 80,
            transport: Transport::Tcp,
            direction: Direction::Ingress,
            outcome: Outcome::Established,
        }
    }

    fn flow(key: FlowKey, count: u64) -> Flow {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80);
        let remote = SocketAddr::new(key.remote, 40000);
        Flow {
            key,
            count,
            ..Flow::example(key.direction, key.transport, local, remote, key.cgroup_id)
        }
    }

    #[test]
    fn folds_kernel_counts_into_one_flow() {
        let now = Instant::now();
        let mut tracker = FlowTracker::default();
        assert!(matches!(
            tracker.admit(Some(key(7)), flow(key(7), 1), now),
            Admission::New(f) if f.count == 1
        ));
        assert!(!tracker.observe_count(key(7), 1000, SystemTime::UNIX_EPOCH, now));
        let updates = tracker.take_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!((updates[0].flow.count, updates[0].delta), (1000, 999));
        assert!(tracker.take_updates().is_empty(), "reported once");
    }

    #[test]
    fn an_update_carries_its_latest_occurrence_time() {
        let now = Instant::now();
        let mut tracker = FlowTracker::default();
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        tracker.admit(
            Some(key(7)),
            Flow {
                first_seen: first,
                ..flow(key(7), 1)
            },
            now,
        );
        let later = first + Duration::from_secs(3);
        tracker.observe_count(key(7), 4, later, now);
        // An unchanged count does not move it.
        let updates = tracker.take_updates();
        assert_eq!(updates[0].last_seen, later);
        tracker.observe_count(key(7), 4, later + Duration::from_secs(9), now);
        assert!(tracker.take_updates().is_empty());
    }

    #[test]
    fn an_evicted_entry_keeps_its_count() {
        let now = Instant::now();
        let mut tracker = FlowTracker::default();
        tracker.admit(Some(key(7)), flow(key(7), 1), now);
        tracker.observe_count(key(7), 10, SystemTime::UNIX_EPOCH, now);
        // Evicted, then new again.
        assert_eq!(
            tracker.admit(Some(key(7)), flow(key(7), 1), now),
            Admission::Known
        );
        tracker.observe_count(key(7), 5, SystemTime::UNIX_EPOCH, now);
        assert_eq!(tracker.take_updates()[0].flow.count, 15);
    }

    #[test]
    fn several_kernel_keys_feed_one_logical_flow() {
        let now = Instant::now();
        let mut tracker = FlowTracker::default();
        // The start-up scan saw 2 connections on the edge owned by cgroup 7.
        tracker.admit(None, flow(key(7), 2), now);
        // The kernel could not attribute a new one (cgroup 0) but the agent
        // resolved it to the same logical flow.
        let unattributed = key(0);
        assert_eq!(
            tracker.admit(Some(unattributed), flow(key(7), 1), now),
            Admission::Known
        );
        tracker.observe_count(unattributed, 3, SystemTime::UNIX_EPOCH, now);
        assert_eq!(tracker.take_updates()[0].flow.count, 5);
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn a_key_is_lost_only_when_missing_twice() {
        let mut tracker = FlowTracker::default();
        assert!(tracker.observe_count(key(9), 4, SystemTime::UNIX_EPOCH, Instant::now()));
        assert!(
            tracker.confirm_lost([key(9)]).is_empty(),
            "may be in flight"
        );
        assert_eq!(tracker.confirm_lost([key(9)]), vec![key(9)]);
        // An event that arrives in between clears it.
        tracker.confirm_lost([key(8)]);
        tracker.admit(Some(key(8)), flow(key(8), 1), Instant::now());
        assert!(tracker.confirm_lost([key(8)]).is_empty());
    }

    #[test]
    fn idle_flows_are_pruned() {
        let start = Instant::now();
        let mut tracker = FlowTracker::default();
        tracker.admit(Some(key(1)), flow(key(1), 1), start);
        tracker.admit(
            Some(key(2)),
            flow(key(2), 1),
            start + Duration::from_secs(10),
        );
        assert_eq!(tracker.prune(start + Duration::from_secs(5)), 1);
        assert_eq!(tracker.len(), 1);
        assert!(
            tracker.observe_count(key(1), 3, SystemTime::UNIX_EPOCH, start),
            "forgotten"
        );
    }
}
