//! The service map of a baseline: workloads grouped by namespace, allowed
//! edges labelled with their ports (dashed when the evidence never used
//! them), alerted paths in red and each identity's blast radius (what it
//! can reach, transitively, through allowed edges). Rendered as one
//! self-contained HTML page with inline SVG (no script, nothing fetched),
//! or as Graphviz DOT or Mermaid text for docs and reviews.
//!
//! The layout is computed here, deterministically: namespaces are bands
//! from top to bottom, and within them nodes sit in columns by their depth
//! along the edges (clients left of servers); a crowded column wraps.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::Write as _,
    sync::Arc,
    time::SystemTime,
};

use super::{named_identity, observed::ObservedFlow};
use crate::{
    baseline::{
        format::Selector,
        matcher::{Matcher, RuleMatch},
        selector::SelectorMatcher,
        validate::{Baseline, PortRange, describe},
    },
    flow::Transport,
    identity::Identity,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Workload,
    Host,
    Node,
    External,
    /// A selector that names many identities (a namespace, labels, a CIDR,
    /// any).
    Group,
    Unknown,
}

impl NodeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::Host => "host",
            Self::Node => "node",
            Self::External => "external",
            Self::Group => "group",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The canonical identity, or `selector:<description>`.
    pub id: String,
    pub label: String,
    pub detail: String,
    /// The band it is drawn in: `namespace shop`, `nodes`, ...
    pub group: String,
    pub kind: NodeKind,
    /// Indexes of the nodes it can reach through allowed edges.
    pub reach: BTreeSet<usize>,
    /// The allowed edges those paths take.
    pub reach_edges: BTreeSet<usize>,
    /// Involved in an alerted path.
    pub alerted: bool,
    identity: Option<Identity>,
    selector: Option<SelectorMatcher>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeState {
    /// Allowed, and used in the evidence.
    Used,
    /// Allowed (no evidence was given to tell).
    Allowed,
    /// Allowed, but nothing in the evidence used it.
    Unused,
    /// Allowed only by an expired edge: allows nothing.
    Expired,
    /// An unauthorized path someone took (from alerts).
    Alert,
}

impl EdgeState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Used => "used",
            Self::Allowed => "allowed",
            Self::Unused => "unused",
            Self::Expired => "expired",
            Self::Alert => "alert",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub state: EdgeState,
    pub ports: Vec<String>,
    /// The baseline edges, or the alerts, behind it.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub title: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub evidence: bool,
}

fn kind_of_id(id: &str) -> NodeKind {
    match id.split_once(':').map(|(k, _)| k) {
        Some("workload") => NodeKind::Workload,
        Some("cgroup" | "systemd" | "container") => NodeKind::Host,
        Some("node") => NodeKind::Node,
        Some("external") => NodeKind::External,
        Some("selector") => NodeKind::Group,
        _ => NodeKind::Unknown,
    }
}

const NODES_GROUP: &str = "nodes";
const HOSTS_GROUP: &str = "hosts";
const OUTSIDE_GROUP: &str = "outside the cluster";
const EVERYWHERE_GROUP: &str = "across namespaces";
const UNKNOWN_GROUP: &str = "unknown";

fn group_of_selector(selector: &Selector) -> String {
    match &selector.namespace {
        Some(ns) if ns != "*" => format!("namespace {ns}"),
        Some(_) => EVERYWHERE_GROUP.into(),
        None if selector.spiffe_id.is_some() => selector
            .spiffe_id
            .as_deref()
            .and_then(|id| id.split("/ns/").nth(1))
            .and_then(|rest| rest.split('/').next())
            .map_or(EVERYWHERE_GROUP.into(), |ns| format!("namespace {ns}")),
        None if selector.node.is_some() => NODES_GROUP.into(),
        None if selector.cidr.is_some() => OUTSIDE_GROUP.into(),
        None if selector.any.is_some() => EVERYWHERE_GROUP.into(),
        None => HOSTS_GROUP.into(),
    }
}

fn group_of_identity(identity: &Identity) -> String {
    match identity {
        Identity::Workload(w) => format!("namespace {}", w.namespace),
        Identity::Node { .. } => NODES_GROUP.into(),
        Identity::External { .. } => OUTSIDE_GROUP.into(),
        Identity::Unknown { .. } => UNKNOWN_GROUP.into(),
        _ => HOSTS_GROUP.into(),
    }
}

/// Short label and detail line of a node.
fn labels_of(id: &str, identity: Option<&Identity>) -> (String, String) {
    if let Some(Identity::Workload(w)) = identity {
        return (w.name.clone(), w.kind.as_str().to_owned());
    }
    match id.split_once(':') {
        Some(("selector", text)) => (text.to_owned(), "selector".into()),
        Some((kind, rest)) => (rest.to_owned(), kind.to_owned()),
        None => (id.to_owned(), String::new()),
    }
}

struct Builder {
    nodes: Vec<Node>,
    index: BTreeMap<String, usize>,
}

impl Builder {
    fn for_selector(&mut self, selector: &Selector, compiled: &SelectorMatcher) -> usize {
        let identity = named_identity(selector);
        let id = match &identity {
            Some(identity) => identity.canonical(),
            None => format!("selector:{}", describe(selector)),
        };
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let (label, detail) = labels_of(&id, identity.as_ref());
        let kind = kind_of_id(&id);
        self.push(Node {
            group: group_of_selector(selector),
            selector: (kind == NodeKind::Group).then(|| compiled.clone()),
            id,
            label,
            detail,
            kind,
            reach: BTreeSet::new(),
            reach_edges: BTreeSet::new(),
            alerted: false,
            identity,
        })
    }

    fn for_identity(&mut self, identity: &Identity) -> usize {
        let id = identity.canonical();
        if let Some(&i) = self.index.get(&id) {
            // An observed identity carries its labels: keep them for the
            // blast radius of label selectors.
            if matches!(identity, Identity::Workload(w) if !w.labels.is_empty()) {
                self.nodes[i].identity = Some(identity.clone());
            }
            return i;
        }
        let (label, detail) = labels_of(&id, Some(identity));
        self.push(Node {
            group: group_of_identity(identity),
            kind: kind_of_id(&id),
            id,
            label,
            detail,
            reach: BTreeSet::new(),
            reach_edges: BTreeSet::new(),
            alerted: false,
            identity: Some(identity.clone()),
            selector: None,
        })
    }

    fn push(&mut self, node: Node) -> usize {
        let i = self.nodes.len();
        self.index.insert(node.id.clone(), i);
        self.nodes.push(node);
        i
    }
}

/// Ports as short ranges: `20-40/tcp, 5432/tcp`.
fn compress_ports(ports: &BTreeSet<(Transport, u16)>) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Option<(Transport, u16, u16)> = None;
    for &(transport, port) in ports {
        run = match run {
            Some((t, first, last)) if t == transport && u32::from(last) + 1 == u32::from(port) => {
                Some((t, first, port))
            }
            Some((t, first, last)) => {
                out.push(
                    PortRange {
                        transport: t,
                        first,
                        last,
                    }
                    .to_string(),
                );
                Some((transport, port, port))
            }
            None => Some((transport, port, port)),
        };
    }
    if let Some((transport, first, last)) = run {
        out.push(
            PortRange {
                transport,
                first,
                last,
            }
            .to_string(),
        );
    }
    out
}

/// An edge's ports and where it came from, while the map is put together.
type Gathered<Port> = (BTreeSet<Port>, Vec<String>);

/// The map of `baseline`; `evidence` tells used from unused edges,
/// `alerts` adds the unauthorized paths.
pub fn build(
    baseline: &Baseline,
    evidence: Option<&[ObservedFlow]>,
    alerts: &[ObservedFlow],
    now: SystemTime,
) -> Graph {
    let mut builder = Builder {
        nodes: Vec::new(),
        index: BTreeMap::new(),
    };
    let matcher = Matcher::new(Arc::new(baseline.clone()));
    let mut used = BTreeSet::new();
    for flow in evidence.unwrap_or_default() {
        if let RuleMatch::Allowed(i) = matcher.judge(&flow.edge(), now) {
            used.insert(i);
        }
    }
    // (from, to, state) → ports, sources
    let mut edges: BTreeMap<(usize, usize, EdgeState), Gathered<String>> = BTreeMap::new();
    for (position, rule) in baseline.rules.iter().enumerate() {
        let from = builder.for_selector(&rule.edge.from, &rule.from);
        let to = builder.for_selector(&rule.edge.to, &rule.to);
        let state = if rule.expired(now) {
            EdgeState::Expired
        } else if evidence.is_none() {
            EdgeState::Allowed
        } else if used.contains(&position) {
            EdgeState::Used
        } else {
            EdgeState::Unused
        };
        let entry = edges.entry((from, to, state)).or_default();
        entry.0.extend(rule.ports.iter().map(PortRange::to_string));
        entry.1.push(rule.label());
    }
    // Labels from the evidence, for identities the baseline names.
    for flow in evidence.unwrap_or_default() {
        for end in [&flow.from, &flow.to] {
            if let Some(&i) = builder.index.get(&end.canonical())
                && matches!(end, Identity::Workload(w) if !w.labels.is_empty())
            {
                builder.nodes[i].identity = Some(end.clone());
            }
        }
    }
    let mut alerted: BTreeMap<(usize, usize), Gathered<(Transport, u16)>> = BTreeMap::new();
    for flow in alerts {
        let from = builder.for_identity(&flow.from);
        let to = builder.for_identity(&flow.to);
        builder.nodes[from].alerted = true;
        builder.nodes[to].alerted = true;
        let entry = alerted.entry((from, to)).or_default();
        entry.0.insert((flow.transport, flow.port));
        if !entry.1.contains(&flow.origin) {
            entry.1.push(flow.origin.clone());
        }
    }
    let mut graph_edges: Vec<Edge> = edges
        .into_iter()
        .map(|((from, to, state), (ports, sources))| {
            let mut ports: Vec<String> = ports.into_iter().collect();
            ports.sort_by_key(|p| PortRange::parse(p).ok());
            Edge {
                from,
                to,
                state,
                ports,
                sources,
            }
        })
        .collect();
    graph_edges.extend(
        alerted
            .into_iter()
            .map(|((from, to), (ports, sources))| Edge {
                from,
                to,
                state: EdgeState::Alert,
                ports: compress_ports(&ports),
                sources,
            }),
    );
    let mut graph = Graph {
        title: baseline.name.clone(),
        nodes: builder.nodes,
        edges: graph_edges,
        evidence: evidence.is_some(),
    };
    blast_radius(&mut graph);
    graph
}

/// Whether group node `group` covers node `node` (its selector matches the
/// node's identity).
fn covers(graph: &Graph, group: usize, node: usize) -> bool {
    match (&graph.nodes[group].selector, &graph.nodes[node].identity) {
        (Some(selector), Some(identity)) => group != node && selector.matches(identity),
        _ => false,
    }
}

/// Each node's transitive reach through allowed (unexpired) edges; an
/// edge from a group (a namespace, `any`) is open to every identity in it.
fn blast_radius(graph: &mut Graph) {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); graph.nodes.len()];
    for (e, edge) in graph.edges.iter().enumerate() {
        if matches!(
            edge.state,
            EdgeState::Used | EdgeState::Allowed | EdgeState::Unused
        ) {
            out[edge.from].push(e);
        }
    }
    let groups: Vec<usize> = (0..graph.nodes.len())
        .filter(|&g| graph.nodes[g].selector.is_some())
        .collect();
    let covering: Vec<Vec<usize>> = (0..graph.nodes.len())
        .map(|n| {
            groups
                .iter()
                .copied()
                .filter(|&g| covers(graph, g, n))
                .collect()
        })
        .collect();
    let covered: Vec<Vec<usize>> = (0..graph.nodes.len())
        .map(|g| {
            (0..graph.nodes.len())
                .filter(|&n| covers(graph, g, n))
                .collect()
        })
        .collect();
    for start in 0..graph.nodes.len() {
        let mut reach = BTreeSet::new();
        let mut taken = BTreeSet::new();
        let mut queue = VecDeque::from([start]);
        let mut seen = BTreeSet::from([start]);
        while let Some(node) = queue.pop_front() {
            let sources = std::iter::once(node).chain(covering[node].iter().copied());
            for source in sources.collect::<Vec<_>>() {
                for &e in &out[source] {
                    taken.insert(e);
                    let target = graph.edges[e].to;
                    let mut reached = vec![target];
                    reached.extend(covered[target].iter().copied());
                    for t in reached {
                        if t != start {
                            reach.insert(t);
                        }
                        if seen.insert(t) {
                            queue.push_back(t);
                        }
                    }
                }
            }
        }
        graph.nodes[start].reach = reach;
        graph.nodes[start].reach_edges = taken;
    }
}

// ---- layout ----

const NODE_W: f64 = 200.0;
const NODE_H: f64 = 42.0;
const ROW_H: f64 = 62.0;
const COLUMN_GAP: f64 = 150.0;
const SUB_GAP: f64 = 24.0;
const BAND_HEAD: f64 = 40.0;
const BAND_PAD: f64 = 14.0;
const MARGIN: f64 = 20.0;
/// Nodes in one column of a band before it wraps into another.
const MAX_ROWS: usize = 10;

/// Where each node is drawn, and the bands.
pub struct Layout {
    /// Each node's column (its depth along the edges).
    pub layer: Vec<usize>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub bands: Vec<(String, f64, f64)>,
    pub width: f64,
    pub height: f64,
}

fn group_rank(group: &str) -> (u8, &str) {
    match group {
        g if g.starts_with("namespace ") => (0, g),
        EVERYWHERE_GROUP => (1, group),
        NODES_GROUP => (2, group),
        HOSTS_GROUP => (3, group),
        OUTSIDE_GROUP => (4, group),
        _ => (5, group),
    }
}

/// Depth along the edges: sources at 0, each server one right of its
/// deepest client; cycles are cut where a depth-first walk (in id order)
/// meets them.
fn layers(graph: &Graph) -> Vec<usize> {
    let n = graph.nodes.len();
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for edge in &graph.edges {
        if edge.from != edge.to {
            succ[edge.from].insert(edge.to);
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| graph.nodes[*a].id.cmp(&graph.nodes[*b].id));
    // 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; n];
    let mut forward: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut topo = Vec::with_capacity(n);
    for &root in &order {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(root, succ[root].iter().copied().collect())];
        state[root] = 1;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) if state[next] == 0 => {
                    forward[node].push(next);
                    state[next] = 1;
                    stack.push((next, succ[next].iter().copied().collect()));
                }
                Some(next) if state[next] == 2 => forward[node].push(next),
                // On the stack: a back edge, left out.
                Some(_) => {}
                None => {
                    state[node] = 2;
                    topo.push(node);
                    stack.pop();
                }
            }
        }
    }
    let mut layer = vec![0usize; n];
    for &node in topo.iter().rev() {
        for &next in &forward[node] {
            layer[next] = layer[next].max(layer[node] + 1);
        }
    }
    layer
}

pub fn layout(graph: &Graph) -> Layout {
    let n = graph.nodes.len();
    let layer = layers(graph);
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let mut groups: Vec<&str> = graph.nodes.iter().map(|node| node.group.as_str()).collect();
    groups.sort_by_key(|g| group_rank(g));
    groups.dedup();
    let group_index: BTreeMap<&str, usize> =
        groups.iter().enumerate().map(|(i, g)| (*g, i)).collect();
    // cells[group][layer] = nodes
    let mut cells: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); depth]; groups.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        cells[group_index[node.group.as_str()]][layer[i]].push(i);
    }
    let shape = |count: usize| -> (usize, usize) {
        let columns = count.div_ceil(MAX_ROWS).max(1);
        (columns, count.div_ceil(columns))
    };
    let column_width: Vec<f64> = (0..depth)
        .map(|l| {
            let sub = cells
                .iter()
                .map(|band| shape(band[l].len()).0)
                .max()
                .unwrap_or(1);
            sub as f64 * NODE_W + (sub - 1) as f64 * SUB_GAP
        })
        .collect();
    let mut column_x = Vec::with_capacity(depth);
    let mut x = MARGIN;
    for width in &column_width {
        column_x.push(x);
        x += width + COLUMN_GAP;
    }
    let width = (x - COLUMN_GAP + MARGIN).max(NODE_W + 2.0 * MARGIN);
    let mut bands = Vec::new();
    let mut band_y = Vec::with_capacity(groups.len());
    let mut y = MARGIN;
    for (g, group) in groups.iter().enumerate() {
        let rows = cells[g].iter().map(|c| shape(c.len()).1).max().unwrap_or(1);
        let height = BAND_HEAD + rows as f64 * ROW_H + BAND_PAD;
        band_y.push(y);
        bands.push((group.to_string(), y, height));
        y += height + BAND_PAD;
    }
    let height = y + MARGIN - BAND_PAD;
    let mut xs = vec![0.0; n];
    let mut ys = vec![0.0; n];
    let mut placed = vec![false; n];
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for edge in &graph.edges {
        preds[edge.to].push(edge.from);
    }
    for l in 0..depth {
        for (g, band) in cells.iter_mut().enumerate() {
            let cell = &mut band[l];
            // Next to their clients: by the mean height of placed ones.
            let key = |i: &usize| -> (i64, String) {
                let ys_of: Vec<f64> = preds[*i]
                    .iter()
                    .filter(|p| placed[**p])
                    .map(|p| ys[*p])
                    .collect();
                let mean = if ys_of.is_empty() {
                    i64::MAX
                } else {
                    (ys_of.iter().sum::<f64>() / ys_of.len() as f64) as i64
                };
                (mean, graph.nodes[*i].id.clone())
            };
            cell.sort_by_cached_key(key);
            let (_, rows) = shape(cell.len());
            for (slot, &i) in cell.iter().enumerate() {
                let (column, row) = (slot / rows, slot % rows);
                xs[i] = column_x[l] + column as f64 * (NODE_W + SUB_GAP);
                ys[i] = band_y[g] + BAND_HEAD + row as f64 * ROW_H;
                placed[i] = true;
            }
        }
    }
    Layout {
        layer,
        x: xs,
        y: ys,
        bands,
        width,
        height,
    }
}

// ---- rendering ----

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

const RED: &str = "#d62728";
const EDGE: &str = "#51606f";
const EXPIRED: &str = "#b0b7bf";

fn fill(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Workload => "#e8f0fe",
        NodeKind::Host => "#fdf1e0",
        NodeKind::Node => "#e6f4ea",
        NodeKind::External => "#f3e8fd",
        NodeKind::Group => "#eef1f4",
        NodeKind::Unknown => "#f8e1e1",
    }
}

fn edge_color(state: EdgeState) -> &'static str {
    match state {
        EdgeState::Alert => RED,
        EdgeState::Expired => EXPIRED,
        _ => EDGE,
    }
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 16px; color: #1f2933; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 6px; }
p.legend span { margin-right: 18px; white-space: nowrap; }
.map { overflow: auto; border: 1px solid #d9dee3; }
.band rect { fill: #fafbfc; stroke: #d9dee3; }
.band text { font-size: 13px; font-weight: 600; fill: #52606d; }
.node rect { stroke: #7b8794; stroke-width: 1; }
.node text { font-size: 13px; fill: #1f2933; }
.node text.detail { font-size: 11px; fill: #52606d; }
.node:hover rect { stroke-width: 3; }
.edge path { fill: none; stroke-width: 1.6; }
.edge.unused path { stroke-dasharray: 7 5; }
.edge.expired path { stroke-dasharray: 2 4; }
.edge.alert path { stroke-width: 2.6; }
.edge text { font-size: 11px; fill: #1f2933; paint-order: stroke; stroke: #ffffff; stroke-width: 4px; stroke-linejoin: round; }
.edge.alert text { fill: #d62728; font-weight: 600; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #d9dee3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
td.alert { color: #d62728; }
";

/// The self-contained page: inline SVG and CSS, no script, nothing
/// fetched. Hovering a node highlights its blast radius (CSS `:has`).
pub fn html(graph: &Graph) -> String {
    let layout = layout(graph);
    let mut out = String::new();
    let title = format!("eastwatch service map: {}", graph.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}",
        escape(&title)
    );
    // Blast radius on hover: the node's reach and the edges it takes.
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.reach.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            ".map:has(#n{i}:hover) .r{i} rect {{ fill: #fff3b0; stroke: #b7791f; stroke-width: 2; }}\n.map:has(#n{i}:hover) .r{i} path {{ stroke: #b7791f; stroke-width: 3; }}"
        );
    }
    let allowed = graph
        .edges
        .iter()
        .filter(|e| e.state != EdgeState::Alert)
        .count();
    let alerts = graph.edges.len() - allowed;
    let _ = write!(
        out,
        "</style>\n</head>\n<body>\n<h1>{}</h1>\n<p>{} identities, {allowed} allowed edges, {alerts} alerted paths{}. Hover a node to see its blast radius.</p>\n",
        escape(&title),
        graph.nodes.len(),
        if graph.evidence {
            "; dashed: unused in the evidence"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "<p class=\"legend\"><span><svg width=\"40\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"40\" y2=\"5\" stroke=\"{EDGE}\" stroke-width=\"2\"/></svg> allowed</span><span><svg width=\"40\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"40\" y2=\"5\" stroke=\"{EDGE}\" stroke-width=\"2\" stroke-dasharray=\"7 5\"/></svg> allowed, unused in the evidence</span><span><svg width=\"40\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"40\" y2=\"5\" stroke=\"{RED}\" stroke-width=\"3\"/></svg> alerted (unauthorized)</span><span><svg width=\"40\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"40\" y2=\"5\" stroke=\"{EXPIRED}\" stroke-width=\"2\" stroke-dasharray=\"2 4\"/></svg> expired</span></p>\n"
    ));
    out.push_str(&svg(graph, &layout));
    out.push_str(&tables(graph));
    out.push_str("</body>\n</html>\n");
    out
}

fn svg(graph: &Graph, layout: &Layout) -> String {
    let mut out = String::new();
    let (w, h) = (layout.width.ceil(), layout.height.ceil());
    let _ = writeln!(
        out,
        "<div class=\"map\"><svg id=\"map\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"service map\">"
    );
    out.push_str("<defs>");
    for (name, color) in [("edge", EDGE), ("alert", RED), ("expired", EXPIRED)] {
        let _ = write!(
            out,
            "<marker id=\"arrow-{name}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker>"
        );
    }
    out.push_str("</defs>\n");
    for (name, y, height) in &layout.bands {
        let _ = writeln!(
            out,
            "<g class=\"band\" data-group=\"{}\"><rect x=\"{}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{height:.1}\" rx=\"6\"/><text x=\"{}\" y=\"{:.1}\">{}</text></g>",
            escape(name),
            MARGIN / 2.0,
            layout.width - MARGIN,
            MARGIN,
            y + 19.0,
            escape(name)
        );
    }
    // Which nodes' blast radius each edge and node belongs to.
    let mut edge_classes: Vec<Vec<String>> = vec![Vec::new(); graph.edges.len()];
    let mut node_classes: Vec<Vec<String>> = vec![Vec::new(); graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &e in &node.reach_edges {
            edge_classes[e].push(format!("r{i}"));
        }
        for &n in &node.reach {
            node_classes[n].push(format!("r{i}"));
        }
    }
    // Parallel edges between one pair bow apart.
    let mut pair_seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (e, edge) in graph.edges.iter().enumerate() {
        let nth = {
            let count = pair_seen
                .entry((edge.from.min(edge.to), edge.from.max(edge.to)))
                .or_default();
            *count += 1;
            *count - 1
        };
        let bow = nth as f64 * 22.0;
        let (fx, fy, tx, ty) = (
            layout.x[edge.from],
            layout.y[edge.from],
            layout.x[edge.to],
            layout.y[edge.to],
        );
        let span = layout.layer[edge.to].saturating_sub(layout.layer[edge.from]);
        let (d, lx, ly) = if tx > fx + NODE_W {
            let (sx, sy) = (fx + NODE_W, fy + NODE_H / 2.0);
            let (ex, ey) = (tx, ty + NODE_H / 2.0);
            let dx = (ex - sx) / 2.0;
            // An edge past other columns arcs over the boxes between.
            let lift = if span > 1 {
                44.0 + 12.0 * (span - 2) as f64
            } else {
                0.0
            };
            let (c1y, c2y) = (sy + bow - lift, ey + bow - lift);
            let d = format!(
                "M{sx:.1},{sy:.1} C{:.1},{c1y:.1} {:.1},{c2y:.1} {ex:.1},{ey:.1}",
                sx + dx,
                ex - dx
            );
            let (mx, my) = bezier_mid((sx, sy), (sx + dx, c1y), (ex - dx, c2y), (ex, ey));
            (d, mx, my)
        } else if edge.from == edge.to {
            let (sx, sy) = (fx + NODE_W * 0.7, fy + NODE_H);
            let (ex, ey) = (fx + NODE_W * 0.3, fy + NODE_H);
            let drop = 34.0 + bow;
            let d = format!(
                "M{sx:.1},{sy:.1} C{sx:.1},{:.1} {ex:.1},{:.1} {ex:.1},{ey:.1}",
                sy + drop,
                ey + drop
            );
            (d, fx + NODE_W / 2.0, sy + drop * 0.75)
        } else {
            // Backwards or within a column: under the boxes.
            let (sx, sy) = (fx + NODE_W / 2.0, fy + NODE_H);
            let (ex, ey) = (tx + NODE_W / 2.0, ty + NODE_H);
            let drop = 30.0 + bow + (sy - ey).abs() * 0.1;
            let (c1, c2) = ((sx, sy.max(ey) + drop), (ex, sy.max(ey) + drop));
            let d = format!(
                "M{sx:.1},{sy:.1} C{:.1},{:.1} {:.1},{:.1} {ex:.1},{ey:.1}",
                c1.0, c1.1, c2.0, c2.1
            );
            let (mx, my) = bezier_mid((sx, sy), c1, c2, (ex, ey));
            (d, mx, my)
        };
        let marker = match edge.state {
            EdgeState::Alert => "alert",
            EdgeState::Expired => "expired",
            _ => "edge",
        };
        let ports = edge.ports.join(", ");
        let title = format!(
            "{} → {} {ports} ({})\n{}",
            graph.nodes[edge.from].id,
            graph.nodes[edge.to].id,
            edge.state.as_str(),
            edge.sources.join("\n")
        );
        let _ = writeln!(
            out,
            "<g id=\"e{e}\" class=\"edge {} {}\" data-from=\"{}\" data-to=\"{}\" data-state=\"{}\" data-ports=\"{}\"><title>{}</title><path d=\"{d}\" stroke=\"{}\" marker-end=\"url(#arrow-{marker})\"/><text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
            edge.state.as_str(),
            edge_classes[e].join(" "),
            escape(&graph.nodes[edge.from].id),
            escape(&graph.nodes[edge.to].id),
            edge.state.as_str(),
            escape(&ports),
            escape(&title),
            edge_color(edge.state),
            ly - 4.0,
            escape(&shorten(&ports, 34))
        );
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let (x, y) = (layout.x[i], layout.y[i]);
        let reach = match node.reach.len() {
            0 => String::new(),
            n => format!(" · reaches {n}"),
        };
        let reached: Vec<&str> = node
            .reach
            .iter()
            .map(|r| graph.nodes[*r].id.as_str())
            .collect();
        let title = format!(
            "{}\nblast radius: {}",
            node.id,
            if reached.is_empty() {
                "nothing".into()
            } else {
                reached.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "<g id=\"n{i}\" class=\"node {}{} {}\" data-id=\"{}\" data-group=\"{}\" data-reach=\"{}\"><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text><text class=\"detail\" x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
            node.kind.as_str(),
            if node.alerted { " alerted" } else { "" },
            node_classes[i].join(" "),
            escape(&node.id),
            escape(&node.group),
            node.reach.len(),
            escape(&title),
            fill(node.kind),
            x + 8.0,
            y + 17.0,
            escape(&shorten(&node.label, 26)),
            x + 8.0,
            y + 33.0,
            escape(&shorten(&format!("{}{reach}", node.detail), 32))
        );
    }
    out.push_str("</svg></div>\n");
    out
}

fn bezier_mid(p0: (f64, f64), p1: (f64, f64), p2: (f64, f64), p3: (f64, f64)) -> (f64, f64) {
    (
        0.125 * p0.0 + 0.375 * p1.0 + 0.375 * p2.0 + 0.125 * p3.0,
        0.125 * p0.1 + 0.375 * p1.1 + 0.375 * p2.1 + 0.125 * p3.1,
    )
}

fn tables(graph: &Graph) -> String {
    let mut out = String::new();
    out.push_str("<h2>Blast radius</h2>\n<p>What each identity can reach through allowed edges, directly or through what it reaches.</p>\n<table id=\"blast-radius\"><tr><th>identity</th><th>reaches</th><th>identities</th></tr>\n");
    let mut order: Vec<usize> = (0..graph.nodes.len()).collect();
    order.sort_by(|a, b| {
        let (na, nb) = (&graph.nodes[*a], &graph.nodes[*b]);
        (std::cmp::Reverse(na.reach.len()), &na.id)
            .cmp(&(std::cmp::Reverse(nb.reach.len()), &nb.id))
    });
    for i in order {
        let node = &graph.nodes[i];
        if node.kind == NodeKind::External && node.reach.is_empty() {
            continue;
        }
        let reached: Vec<String> = node
            .reach
            .iter()
            .map(|r| escape(&graph.nodes[*r].id))
            .collect();
        let _ = writeln!(
            out,
            "<tr data-id=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&node.id),
            escape(&node.id),
            node.reach.len(),
            reached.join("<br>")
        );
    }
    out.push_str("</table>\n");
    let alerts: Vec<&Edge> = graph
        .edges
        .iter()
        .filter(|e| e.state == EdgeState::Alert)
        .collect();
    if !alerts.is_empty() {
        out.push_str("<h2>Alerted paths</h2>\n<table id=\"alerted\"><tr><th>from</th><th>to</th><th>ports</th><th>alerts</th></tr>\n");
        for edge in alerts {
            let _ = writeln!(
                out,
                "<tr><td class=\"alert\">{}</td><td class=\"alert\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&graph.nodes[edge.from].id),
                escape(&graph.nodes[edge.to].id),
                escape(&edge.ports.join(", ")),
                escape(&origins(&edge.sources))
            );
        }
        out.push_str("</table>\n");
    }
    let unused: Vec<&Edge> = graph
        .edges
        .iter()
        .filter(|e| e.state == EdgeState::Unused)
        .collect();
    if !unused.is_empty() {
        out.push_str("<h2>Unused edges</h2>\n<p>Allowed, but nothing in the evidence used them: candidates to remove.</p>\n<table id=\"unused\"><tr><th>edge</th></tr>\n");
        for edge in unused {
            for source in &edge.sources {
                let _ = writeln!(out, "<tr><td>{}</td></tr>", escape(source));
            }
        }
        out.push_str("</table>\n");
    }
    out
}

/// `dir/alerts.jsonl:1`, `dir/alerts.jsonl:3 (scan target)` →
/// `alerts.jsonl lines 1, 3`.
fn origins(sources: &[String]) -> String {
    let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for source in sources {
        let source = source.strip_suffix(" (scan target)").unwrap_or(source);
        let name = source.rsplit('/').next().unwrap_or(source);
        let (file, line) = name
            .rsplit_once(':')
            .map_or((name, None), |(f, l)| (f, Some(l)));
        let lines = by_file.entry(file).or_default();
        if let Some(line) = line
            && !lines.contains(&line)
        {
            lines.push(line);
        }
    }
    let parts: Vec<String> = by_file
        .into_iter()
        .map(|(file, lines)| match lines.len() {
            0 => file.to_owned(),
            1 => format!("{file} line {}", lines[0]),
            _ => format!("{file} lines {}", lines.join(", ")),
        })
        .collect();
    parts.join("; ")
}

fn dot_quote(text: &str) -> String {
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// Graphviz DOT: namespaces as clusters, unused edges dashed, alerts red.
pub fn dot(graph: &Graph) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        dot_quote(&format!("eastwatch {}", graph.title))
    );
    let mut groups: BTreeMap<(u8, String), Vec<usize>> = BTreeMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let (rank, name) = group_rank(&node.group);
        groups.entry((rank, name.to_owned())).or_default().push(i);
    }
    for (g, ((_, name), members)) in groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph cluster_{g} {{\n    label={};",
            dot_quote(name)
        );
        for &i in members {
            let node = &graph.nodes[i];
            let reach = if node.reach.is_empty() {
                String::new()
            } else {
                format!("\nreaches {}", node.reach.len())
            };
            let _ = writeln!(
                out,
                "    {} [label={}, fillcolor=\"{}\"];",
                dot_quote(&node.id),
                dot_quote(&format!("{}\n{}{reach}", node.label, node.detail)),
                fill(node.kind)
            );
        }
        out.push_str("  }\n");
    }
    for edge in &graph.edges {
        let style = match edge.state {
            EdgeState::Alert => format!(", color=\"{RED}\", fontcolor=\"{RED}\", penwidth=2"),
            EdgeState::Unused => ", style=dashed".into(),
            EdgeState::Expired => format!(", style=dotted, color=\"{EXPIRED}\""),
            EdgeState::Used | EdgeState::Allowed => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{style}];",
            dot_quote(&graph.nodes[edge.from].id),
            dot_quote(&graph.nodes[edge.to].id),
            dot_quote(&edge.ports.join(", "))
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(text: &str) -> String {
    text.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// Mermaid flowchart: namespaces as subgraphs, unused edges dotted, alerts
/// red.
pub fn mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut groups: BTreeMap<(u8, String), Vec<usize>> = BTreeMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let (rank, name) = group_rank(&node.group);
        groups.entry((rank, name.to_owned())).or_default().push(i);
    }
    for (g, ((_, name), members)) in groups.iter().enumerate() {
        let _ = writeln!(out, "  subgraph g{g}[\"{}\"]", mermaid_text(name));
        for &i in members {
            let node = &graph.nodes[i];
            let reach = if node.reach.is_empty() {
                String::new()
            } else {
                format!(" · reaches {}", node.reach.len())
            };
            let _ = writeln!(
                out,
                "    n{i}[\"{}<br/>{}{reach}\"]",
                mermaid_text(&node.label),
                mermaid_text(&node.detail)
            );
        }
        out.push_str("  end\n");
    }
    let mut red = Vec::new();
    for (e, edge) in graph.edges.iter().enumerate() {
        let arrow = match edge.state {
            EdgeState::Unused | EdgeState::Expired => "-.->",
            EdgeState::Alert => "==>",
            EdgeState::Used | EdgeState::Allowed => "-->",
        };
        if edge.state == EdgeState::Alert {
            red.push(e.to_string());
        }
        let _ = writeln!(
            out,
            "  n{} {arrow}|\"{}\"| n{}",
            edge.from,
            mermaid_text(&edge.ports.join(", ")),
            edge.to
        );
    }
    if !red.is_empty() {
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:{RED},stroke-width:2px,color:{RED}",
            red.join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::validate;

    fn baseline(edges: &str) -> Baseline {
        let text = format!(
            "apiVersion: eastwatch.io/v1\nkind: Baseline\nmetadata:\n  name: shop\nspec:\n  edges:\n{edges}"
        );
        validate::from_str(&text, "b.yaml", SystemTime::now())
            .expect("valid")
            .0
    }

    fn edge(from: &str, to: &str, ports: &str) -> String {
        format!("    - from: {from}\n      to: {to}\n      ports: [{ports}]\n")
    }

    fn w(ns: &str, name: &str) -> String {
        format!("{{namespace: {ns}, workload: {{kind: Deployment, name: {name}}}}}")
    }

    fn alert(from: &str, to: &str, port: u16) -> ObservedFlow {
        ObservedFlow {
            from: crate::tools::parse_identity(from).expect("id"),
            to: crate::tools::parse_identity(to).expect("id"),
            port,
            transport: Transport::Tcp,
            service: None,
            origin: "alerts.jsonl:1".into(),
            count: 1,
            alerted: true,
        }
    }

    fn shop() -> Baseline {
        baseline(&format!(
            "{}{}{}",
            edge(
                &w("shop", "frontend"),
                &w("shop", "api"),
                "\"80/tcp\", \"8080/tcp\""
            ),
            edge(&w("shop", "api"), &w("shop", "db"), "\"5432/tcp\""),
            edge("{namespace: shop}", "{cidr: 10.0.0.0/8}", "\"53/udp\""),
        ))
    }

    #[test]
    fn blast_radius_follows_edges_and_namespace_wide_ones() {
        let graph = build(&shop(), None, &[], SystemTime::now());
        let reach = |id: &str| -> Vec<String> {
            let node = graph.nodes.iter().find(|n| n.id == id).expect("node");
            node.reach
                .iter()
                .map(|r| graph.nodes[*r].id.clone())
                .collect()
        };
        assert_eq!(
            reach("workload:shop/deployment/frontend"),
            [
                "workload:shop/deployment/api",
                "workload:shop/deployment/db",
                "selector:cidr:10.0.0.0/8"
            ]
        );
        assert_eq!(
            reach("workload:shop/deployment/db"),
            ["selector:cidr:10.0.0.0/8"],
            "every shop workload may reach the network the namespace may"
        );
    }

    #[test]
    fn alerts_are_red_unused_edges_dashed() {
        let b = shop();
        let used = alert(
            "workload:shop/deployment/api",
            "workload:shop/deployment/db",
            5432,
        );
        let attack = [
            alert(
                "workload:shop/deployment/frontend",
                "workload:shop/deployment/db",
                5432,
            ),
            alert(
                "workload:shop/deployment/frontend",
                "workload:shop/deployment/db",
                22,
            ),
            alert(
                "workload:shop/deployment/frontend",
                "workload:shop/deployment/db",
                23,
            ),
        ];
        let graph = build(&b, Some(&[used]), &attack, SystemTime::now());
        let states: Vec<(EdgeState, String)> = graph
            .edges
            .iter()
            .map(|e| (e.state, e.ports.join(", ")))
            .collect();
        assert!(
            states.contains(&(EdgeState::Used, "5432/tcp".into())),
            "{states:?}"
        );
        assert!(
            states.contains(&(EdgeState::Unused, "80/tcp, 8080/tcp".into())),
            "{states:?}"
        );
        assert!(
            states.contains(&(EdgeState::Alert, "22-23/tcp, 5432/tcp".into())),
            "{states:?}"
        );
        let html = html(&graph);
        assert!(html.contains("class=\"edge alert"), "{html}");
        assert!(html.contains(&format!("stroke=\"{RED}\"")));
        assert!(html.contains("class=\"edge unused"));
        assert!(!html.contains("<script"));
        let dot = dot(&graph);
        assert!(
            dot.contains("subgraph cluster_0 {\n    label=\"namespace shop\";"),
            "{dot}"
        );
        assert!(dot.contains("style=dashed"), "{dot}");
        assert!(dot.contains(&format!("color=\"{RED}\"")), "{dot}");
        let mermaid = mermaid(&graph);
        assert!(
            mermaid.starts_with("flowchart LR\n  subgraph g0[\"namespace shop\"]"),
            "{mermaid}"
        );
        assert!(mermaid.contains("-.->|\"80/tcp, 8080/tcp\"|"), "{mermaid}");
        assert!(
            mermaid.contains("==>|\"22-23/tcp, 5432/tcp\"|"),
            "{mermaid}"
        );
        assert!(mermaid.contains(&format!("stroke:{RED}")), "{mermaid}");
    }

    #[test]
    fn text_from_files_is_escaped() {
        let b = baseline(&edge(
            "{cgroup: \"/x/<script>alert(1)</script>\"}",
            "{systemd: \"a\\\"b.service\"}",
            "\"1/tcp\"",
        ));
        let graph = build(&b, None, &[], SystemTime::now());
        let page = html(&graph);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(dot(&graph).contains("a\\\"b.service"));
        assert!(mermaid(&graph).contains("#lt;script#gt;"));
    }

    /// 300 workloads in 12 namespaces, each calling a few others: the same
    /// bytes every time, and no two boxes overlap.
    #[test]
    fn large_maps_lay_out_deterministically_without_overlaps() {
        let mut edges = String::new();
        for i in 0..300 {
            let (ns, next) = (format!("ns{}", i % 12), (i * 7 + 3) % 300);
            edges.push_str(&edge(
                &w(&ns, &format!("svc{i}")),
                &w(&format!("ns{}", next % 12), &format!("svc{next}")),
                "\"8080/tcp\"",
            ));
            if i % 5 == 0 {
                edges.push_str(&edge(
                    &w(&ns, &format!("svc{i}")),
                    "{cidr: 192.0.2.0/24}",
                    "\"443/tcp\"",
                ));
            }
        }
        let b = baseline(&edges);
        let graph = build(&b, None, &[], SystemTime::now());
        assert_eq!(graph.nodes.len(), 301);
        let first = html(&graph);
        assert_eq!(first, html(&build(&b, None, &[], SystemTime::now())));
        let layout = layout(&graph);
        let mut boxes: Vec<(f64, f64)> = layout
            .x
            .iter()
            .copied()
            .zip(layout.y.iter().copied())
            .collect();
        boxes.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let apart = (a.0 - b.0).abs() >= NODE_W || (a.1 - b.1).abs() >= NODE_H;
                assert!(apart, "boxes at {a:?} and {b:?} overlap");
            }
            assert!(a.0 + NODE_W <= layout.width && a.1 + NODE_H <= layout.height);
        }
        assert!(
            layout.bands.len() == 13,
            "12 namespaces and outside: {}",
            layout.bands.len()
        );
        // Readable: no column holds more than MAX_ROWS boxes of one band.
        assert!(
            layout.height
                < 13.0 * (BAND_HEAD + MAX_ROWS as f64 * ROW_H + 2.0 * BAND_PAD) + 2.0 * MARGIN
        );
    }
}
