//! What the agent printed, with the queries the tests ask of it.

use serde_json::Value;

pub struct Events {
    pub all: Vec<Value>,
    pub stderr: String,
}

/// An alert line (`eastwatch.alert.*`), whatever its kind.
pub fn is_alert(event: &Value) -> bool {
    event["event"]
        .as_str()
        .is_some_and(|kind| kind.starts_with("eastwatch.alert."))
}

impl Events {
    pub fn new(all: Vec<Value>, stderr: String) -> Self {
        Self { all, stderr }
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.all.iter().filter(move |e| e["event"] == kind)
    }

    /// New-flow records (`event: flow`) owned by cgroup `id`.
    pub fn flows_of(&self, cgroup_id: u64) -> Vec<&Value> {
        self.of_kind("flow")
            .filter(|e| e["cgroup"]["id"].as_u64() == Some(cgroup_id))
            .collect()
    }

    /// The one new-flow record matching, failing with context otherwise.
    pub fn only_flow(&self, what: &str, matches: impl Fn(&Value) -> bool) -> &Value {
        let found: Vec<&Value> = self.of_kind("flow").filter(|e| matches(e)).collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one flow: {what}; got {found:#?}\n{}",
            self.dump()
        );
        found[0]
    }

    /// The latest count of the flow matching (new or update records).
    pub fn final_count(&self, matches: impl Fn(&Value) -> bool) -> u64 {
        self.all
            .iter()
            .filter(|e| e["event"] == "flow" || e["event"] == "flow_update")
            .filter(|e| matches(e))
            .filter_map(|e| e["count"].as_u64())
            .max()
            .unwrap_or(0)
    }

    pub fn summary(&self) -> &Value {
        self.of_kind("summary")
            .last()
            .unwrap_or_else(|| panic!("no summary:\n{}", self.dump()))
    }

    /// Everything, for failure messages.
    pub fn dump(&self) -> String {
        let mut text: Vec<String> = self.all.iter().map(Value::to_string).collect();
        text.push(format!("--- stderr ---\n{}", self.stderr));
        text.join("\n")
    }
}

/// Field accessors for a flow record.
pub trait FlowExt {
    fn direction(&self) -> &str;
    fn transport(&self) -> &str;
    fn outcome(&self) -> &str;
    fn remote_port(&self) -> u64;
    fn remote_address(&self) -> &str;
    fn local_port(&self) -> u64;
    fn service_port(&self) -> u64;
}

impl FlowExt for Value {
    fn direction(&self) -> &str {
        self["direction"].as_str().unwrap_or_default()
    }
    fn transport(&self) -> &str {
        self["transport"].as_str().unwrap_or_default()
    }
    fn outcome(&self) -> &str {
        self["outcome"].as_str().unwrap_or_default()
    }
    fn remote_port(&self) -> u64 {
        self["remote"]["port"].as_u64().unwrap_or_default()
    }
    fn remote_address(&self) -> &str {
        self["remote"]["address"].as_str().unwrap_or_default()
    }
    fn local_port(&self) -> u64 {
        self["local"]["port"].as_u64().unwrap_or_default()
    }
    fn service_port(&self) -> u64 {
        self["service_port"].as_u64().unwrap_or_default()
    }
}
