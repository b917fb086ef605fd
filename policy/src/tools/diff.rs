//! Edge-level differences between two baselines.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::sorted_ports;
use crate::baseline::{
    format::{BaselineDoc, Selector},
    validate::describe,
};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeSummary {
    pub from: String,
    pub to: String,
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeChange {
    pub from: String,
    pub to: String,
    pub ports_added: Vec<String>,
    pub ports_removed: Vec<String>,
    /// Other fields that changed: reason, owner, expires.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Diff {
    pub added: Vec<EdgeSummary>,
    pub removed: Vec<EdgeSummary>,
    pub changed: Vec<EdgeChange>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

struct Pair {
    ports: BTreeSet<String>,
    reason: BTreeSet<String>,
    owner: BTreeSet<String>,
    expires: BTreeSet<String>,
}

/// Edges by (from, to), every edge between the same ends folded together.
fn pairs(doc: &BaselineDoc) -> BTreeMap<(Selector, Selector), Pair> {
    let mut map: BTreeMap<(Selector, Selector), Pair> = BTreeMap::new();
    for edge in &doc.spec.edges {
        let pair = map
            .entry((edge.from.value.clone(), edge.to.value.clone()))
            .or_insert_with(|| Pair {
                ports: BTreeSet::new(),
                reason: BTreeSet::new(),
                owner: BTreeSet::new(),
                expires: BTreeSet::new(),
            });
        pair.ports
            .extend(edge.ports.iter().map(|p| p.value.clone()));
        pair.reason.extend(edge.reason.clone());
        pair.owner.extend(edge.owner.clone());
        pair.expires
            .extend(edge.expires.as_ref().map(|e| e.value.clone()));
    }
    map
}

/// Edge-level differences from `old` to `new`.
pub fn diff(old: &BaselineDoc, new: &BaselineDoc) -> Diff {
    let (old, new) = (pairs(old), pairs(new));
    let mut diff = Diff::default();
    let summary = |(from, to): &(Selector, Selector), pair: &Pair| EdgeSummary {
        from: describe(from),
        to: describe(to),
        ports: sorted_ports(pair.ports.iter().cloned()),
    };
    for (key, pair) in &old {
        match new.get(key) {
            None => diff.removed.push(summary(key, pair)),
            Some(now) => {
                let mut fields = Vec::new();
                for (name, a, b) in [
                    ("reason", &pair.reason, &now.reason),
                    ("owner", &pair.owner, &now.owner),
                    ("expires", &pair.expires, &now.expires),
                ] {
                    if a != b {
                        fields.push(name.to_owned());
                    }
                }
                let added = sorted_ports(now.ports.difference(&pair.ports).cloned());
                let removed = sorted_ports(pair.ports.difference(&now.ports).cloned());
                if !added.is_empty() || !removed.is_empty() || !fields.is_empty() {
                    diff.changed.push(EdgeChange {
                        from: describe(&key.0),
                        to: describe(&key.1),
                        ports_added: added,
                        ports_removed: removed,
                        fields,
                    });
                }
            }
        }
    }
    for (key, pair) in &new {
        if !old.contains_key(key) {
            diff.added.push(summary(key, pair));
        }
    }
    diff
}

/// `+`, `-` and `~` lines for people.
pub fn diff_text(diff: &Diff) -> String {
    let mut out = String::new();
    for e in &diff.added {
        out.push_str(&format!("+ {} -> {} {}\n", e.from, e.to, e.ports.join(",")));
    }
    for e in &diff.removed {
        out.push_str(&format!("- {} -> {} {}\n", e.from, e.to, e.ports.join(",")));
    }
    for c in &diff.changed {
        let mut what = Vec::new();
        if !c.ports_added.is_empty() {
            what.push(format!("ports +{}", c.ports_added.join(",+")));
        }
        if !c.ports_removed.is_empty() {
            what.push(format!("ports -{}", c.ports_removed.join(",-")));
        }
        if !c.fields.is_empty() {
            what.push(format!("{} changed", c.fields.join(", ")));
        }
        out.push_str(&format!("~ {} -> {}: {}\n", c.from, c.to, what.join("; ")));
    }
    if out.is_empty() {
        out.push_str("no edge changed\n");
    }
    out
}
