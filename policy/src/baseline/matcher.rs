//! The compiled baseline: rules filed by the exact identity, namespace,
//! cgroup subtree or network their ends name, so judging a flow looks at
//! a handful of candidate rules, never at all of them.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::SystemTime};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

use super::{
    selector::{IndexKey, cgroup_tree_key, namespace_key},
    validate::{Baseline, Rule},
};
use crate::{
    flow::Transport,
    identity::{Identity, ResolvedFlow},
};

/// A lateral edge as observed: client, server, service port, transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObservedEdge {
    pub from: Identity,
    pub to: Identity,
    pub port: u16,
    pub transport: Transport,
}

impl ObservedEdge {
    /// From the client to the server on the server's port: both
    /// observations of one connection give the same edge, through a
    /// Service too (the client dials its port, the server sees the target
    /// port).
    pub fn of(flow: &ResolvedFlow) -> Self {
        let server = flow.server().end;
        Self {
            from: flow.client().end.identity.clone(),
            to: server.identity.clone(),
            port: server.target_port.unwrap_or(flow.flow.key.service_port),
            transport: flow.flow.key.transport,
        }
    }
}

impl std::fmt::Display for ObservedEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}",
            self.from, self.to, self.port, self.transport
        )
    }
}

/// Which rule, if any, allows an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch {
    /// Allowed by the rule at this index.
    Allowed(usize),
    /// Only rules that have expired would allow it (the first of them).
    Expired(usize),
    Unauthorized,
}

impl RuleMatch {
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Allowed(_) => Verdict::Allowed,
            Self::Expired(_) => Verdict::ExpiredRule,
            Self::Unauthorized => Verdict::Unauthorized,
        }
    }
}

/// What the baseline says about a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allowed,
    /// Only expired rules would allow it.
    ExpiredRule,
    Unauthorized,
}

impl Verdict {
    /// The name in JSON, metrics and alerts, e.g. `expired-rule`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::ExpiredRule => "expired-rule",
            Self::Unauthorized => "unauthorized",
        }
    }
}

type KeyId = u32;
/// The id of "every identity" (broad selectors).
const BROAD: KeyId = 0;

pub struct Matcher {
    baseline: Arc<Baseline>,
    keys: HashMap<String, KeyId>,
    v4: PrefixMap<Ipv4Net, KeyId>,
    v6: PrefixMap<Ipv6Net, KeyId>,
    /// (from key, to key) → rules.
    pairs: HashMap<(KeyId, KeyId), Vec<u32>>,
    /// Rules by one end's key, for the nearest rule of an alert.
    by_from: HashMap<KeyId, Vec<u32>>,
    by_to: HashMap<KeyId, Vec<u32>>,
}

impl Matcher {
    pub fn new(baseline: Arc<Baseline>) -> Self {
        let mut matcher = Self {
            baseline: Arc::clone(&baseline),
            keys: HashMap::new(),
            v4: PrefixMap::new(),
            v6: PrefixMap::new(),
            pairs: HashMap::new(),
            by_from: HashMap::new(),
            by_to: HashMap::new(),
        };
        let mut next: KeyId = BROAD + 1;
        for (position, rule) in baseline.rules.iter().enumerate() {
            let mut id_of = |key: IndexKey| -> KeyId {
                let mut fresh = || {
                    next += 1;
                    next - 1
                };
                match key {
                    IndexKey::Broad => BROAD,
                    IndexKey::Exact(text) => *matcher.keys.entry(text).or_insert_with(&mut fresh),
                    IndexKey::Cidr(IpNet::V4(net)) => match matcher.v4.get(&net) {
                        Some(id) => *id,
                        None => {
                            let id = fresh();
                            matcher.v4.insert(net, id);
                            id
                        }
                    },
                    IndexKey::Cidr(IpNet::V6(net)) => match matcher.v6.get(&net) {
                        Some(id) => *id,
                        None => {
                            let id = fresh();
                            matcher.v6.insert(net, id);
                            id
                        }
                    },
                }
            };
            let from = id_of(rule.from.index_key());
            let to = id_of(rule.to.index_key());
            matcher
                .pairs
                .entry((from, to))
                .or_default()
                .push(position as u32);
            if from != BROAD {
                matcher
                    .by_from
                    .entry(from)
                    .or_default()
                    .push(position as u32);
            }
            if to != BROAD {
                matcher.by_to.entry(to).or_default().push(position as u32);
            }
        }
        matcher
    }

    /// The rule nearest to allowing `edge` among those that name one of its
    /// ends (what an alert quotes), with why it does not.
    pub fn nearest_rule(&self, edge: &ObservedEdge, now: SystemTime) -> Option<String> {
        let mut from_keys = Vec::with_capacity(4);
        let mut to_keys = Vec::with_capacity(4);
        self.candidate_keys(&edge.from, &mut from_keys);
        self.candidate_keys(&edge.to, &mut to_keys);
        let candidates = from_keys
            .iter()
            .filter_map(|k| self.by_from.get(k))
            .chain(to_keys.iter().filter_map(|k| self.by_to.get(k)))
            .flatten()
            .take(4096);
        let mut best: Option<(usize, &Rule, Vec<String>)> = None;
        for position in candidates {
            let rule = &self.baseline.rules[*position as usize];
            let reasons = mismatches(rule, edge, now);
            if best
                .as_ref()
                .is_none_or(|(n, r, _)| (reasons.len(), rule.index) < (*n, r.index))
            {
                best = Some((reasons.len(), rule, reasons));
            }
        }
        best.map(|(_, rule, reasons)| format!("{} (nearest; {})", rule.label(), reasons.join("; ")))
    }

    pub fn baseline(&self) -> &Arc<Baseline> {
        &self.baseline
    }

    /// The index keys an identity can be filed under.
    fn candidate_keys(&self, identity: &Identity, out: &mut Vec<KeyId>) {
        out.clear();
        out.push(BROAD);
        let mut exact = |text: &str| {
            if let Some(id) = self.keys.get(text) {
                out.push(*id);
            }
        };
        match identity {
            Identity::Workload(w) => {
                exact(&identity.canonical());
                exact(&namespace_key(&w.namespace));
            }
            Identity::Cgroup { path } => {
                exact(&identity.canonical());
                for (index, _) in path.match_indices('/') {
                    exact(&cgroup_tree_key(&path[..=index]));
                }
            }
            Identity::External { address } => match address.to_canonical() {
                IpAddr::V4(ip) => out.extend(self.v4.cover_values(&Ipv4Net::from(ip)).copied()),
                IpAddr::V6(ip) => out.extend(self.v6.cover_values(&Ipv6Net::from(ip)).copied()),
            },
            Identity::Unknown { .. } => {}
            _ => exact(&identity.canonical()),
        }
    }

    /// Judges one edge at `now`.
    pub fn judge(&self, edge: &ObservedEdge, now: SystemTime) -> RuleMatch {
        let mut from_keys = Vec::with_capacity(4);
        let mut to_keys = Vec::with_capacity(4);
        self.candidate_keys(&edge.from, &mut from_keys);
        self.candidate_keys(&edge.to, &mut to_keys);
        let mut expired = None;
        for from in &from_keys {
            for to in &to_keys {
                let Some(rules) = self.pairs.get(&(*from, *to)) else {
                    continue;
                };
                for position in rules {
                    let rule = &self.baseline.rules[*position as usize];
                    if rule_matches(rule, edge) {
                        if !rule.expired(now) {
                            return RuleMatch::Allowed(*position as usize);
                        }
                        expired.get_or_insert(*position as usize);
                    }
                }
            }
        }
        expired.map_or(RuleMatch::Unauthorized, RuleMatch::Expired)
    }
}

pub fn rule_matches(rule: &Rule, edge: &ObservedEdge) -> bool {
    rule.allows_port(edge.port, edge.transport)
        && rule.from.matches(&edge.from)
        && rule.to.matches(&edge.to)
}

/// The same verdict by looking at every rule: the reference the compiled
/// matcher is tested and benchmarked against.
pub fn judge_linear(baseline: &Baseline, edge: &ObservedEdge, now: SystemTime) -> RuleMatch {
    let mut expired = None;
    for (position, rule) in baseline.rules.iter().enumerate() {
        if rule_matches(rule, edge) {
            if !rule.expired(now) {
                return RuleMatch::Allowed(position);
            }
            expired.get_or_insert(position);
        }
    }
    expired.map_or(RuleMatch::Unauthorized, RuleMatch::Expired)
}

/// The rules that come nearest to allowing `edge`, with why each does not
/// (empty reasons: it allows it). Best first, at most `limit`.
pub fn nearest<'a>(
    baseline: &'a Baseline,
    edge: &ObservedEdge,
    now: SystemTime,
    limit: usize,
) -> Vec<(&'a Rule, Vec<String>)> {
    let mut scored: Vec<(usize, &Rule, Vec<String>)> = baseline
        .rules
        .iter()
        .map(|rule| {
            let reasons = mismatches(rule, edge, now);
            (reasons.len(), rule, reasons)
        })
        .collect();
    scored.sort_by_key(|(misses, rule, _)| (*misses, rule.index));
    scored
        .into_iter()
        .filter(|(misses, _, _)| *misses < 3)
        .take(limit)
        .map(|(_, rule, reasons)| (rule, reasons))
        .collect()
}

/// Why `rule` does not allow `edge`; empty when it does.
pub fn mismatches(rule: &Rule, edge: &ObservedEdge, now: SystemTime) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(why) = rule.from.mismatch(&edge.from) {
        reasons.push(format!("from: {why}"));
    }
    if let Some(why) = rule.to.mismatch(&edge.to) {
        reasons.push(format!("to: {why}"));
    }
    if !rule.allows_port(edge.port, edge.transport) {
        let ports: Vec<String> = rule.ports.iter().map(|p| p.to_string()).collect();
        reasons.push(format!(
            "port: {}/{} is not in {}",
            edge.port,
            edge.transport,
            ports.join(", ")
        ));
    }
    if rule.expired(now) {
        reasons.push("expired".into());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_have_one_name_each() {
        for verdict in [
            Verdict::Allowed,
            Verdict::ExpiredRule,
            Verdict::Unauthorized,
        ] {
            assert_eq!(
                serde_json::to_value(verdict).ok(),
                Some(serde_json::Value::from(verdict.as_str()))
            );
        }
    }
}
