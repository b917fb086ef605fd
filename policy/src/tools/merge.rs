//! One baseline from many (learned on many nodes, say).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::SystemTime,
};

use super::{ToolError, load_doc, load_valid, sorted_ports};
use crate::baseline::format::{BaselineDoc, Edge, Located, Selector};

/// One baseline with every edge of `docs`: edges with the same ends and the
/// same reason, owner and expiry become one with all their ports; the
/// result is sorted, so the order of the inputs does not matter.
pub fn merge(docs: &[BaselineDoc], name: &str) -> BaselineDoc {
    type Key = (
        Selector,
        Selector,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut edges: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for doc in docs {
        for edge in &doc.spec.edges {
            let key = (
                edge.from.value.clone(),
                edge.to.value.clone(),
                edge.reason.clone(),
                edge.owner.clone(),
                edge.expires.as_ref().map(|e| e.value.clone()),
            );
            edges
                .entry(key)
                .or_default()
                .extend(edge.ports.iter().map(|p| p.value.clone()));
        }
    }
    let mut merged = BaselineDoc::new(name);
    for ((from, to, reason, owner, expires), ports) in edges {
        merged.spec.edges.push(Located::new(Edge {
            from: Located::new(from),
            to: Located::new(to),
            ports: Located::new(sorted_ports(ports).into_iter().map(Located::new).collect()),
            reason,
            owner,
            expires: expires.map(Located::new),
        }));
    }
    merged
}

/// [`merge`] of `files`, named `name` or as the first file is. Only valid
/// inputs: a merge must not launder a broken file.
pub fn merge_files(
    files: &[PathBuf],
    name: Option<&str>,
    now: SystemTime,
) -> Result<BaselineDoc, ToolError> {
    let mut docs = Vec::new();
    for file in files {
        load_valid(file, now)?;
        docs.push(load_doc(file)?);
    }
    let name = match (name, docs.first()) {
        (Some(name), _) => name.to_owned(),
        (None, Some(first)) => first.metadata.name.value.clone(),
        (None, None) => return Err(ToolError::Argument("no baseline to merge".into())),
    };
    Ok(merge(&docs, &name))
}
