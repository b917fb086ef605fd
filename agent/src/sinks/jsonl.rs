//! The JSON-lines alert sink: one alert per line, on stdout or appended to
//! a file. Times are RFC 3339; `event` is the alert kind's event name.

use std::{fs::OpenOptions, io::Write, path::Path};

use eastwatch_policy::{alert::Alert, timestamp::rfc3339};
use serde_json::{Value, json};

use super::{AlertSink, SinkError};

/// An alert as a JSON object.
pub fn alert_json(alert: &Alert) -> Value {
    let mut value = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("event".into(), json!(alert.kind.event_name()));
        map.insert("time".into(), json!(rfc3339(alert.time)));
        if let (Some(flow), Some(Value::Object(facts))) = (&alert.flow, map.get_mut("flow")) {
            facts.insert("first_seen".into(), json!(rfc3339(flow.first_seen)));
            facts.insert("last_seen".into(), json!(rfc3339(flow.last_seen)));
        }
    }
    value
}

pub struct JsonLinesSink {
    out: Box<dyn Write + Send>,
}

impl JsonLinesSink {
    pub fn stdout() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
        }
    }

    /// Appends to `path`, creating it.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            out: Box::new(file),
        })
    }
}

impl AlertSink for JsonLinesSink {
    fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        let mut line = alert_json(alert).to_string();
        line.push('\n');
        // One write per line: lines from several writers never interleave.
        self.out.write_all(line.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}
