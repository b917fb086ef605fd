//! The stage of `eastwatch observe`: every observation printed, nothing
//! learned or judged; a line whenever the identity sources change state.

use std::{
    io::{BufWriter, Stdout},
    time::SystemTime,
};

use eastwatch_policy::alert::{Alert, Mode};

use super::{Ready, Resolved, Stage, Summary, Taken};
use crate::{
    identity::{IdentityResolver, resolver::IdentityStatus},
    sinks::printer::{Format, Printer},
};

pub struct PrintStage {
    printer: Printer<BufWriter<Stdout>>,
    resolver: IdentityResolver,
    /// Where the identity sources stood at the last line about them.
    identity: Option<IdentityStatus>,
}

impl PrintStage {
    pub fn new(format: Format, resolver: IdentityResolver) -> Self {
        Self {
            printer: Printer::stdout(format),
            resolver,
            identity: None,
        }
    }
}

impl Stage for PrintStage {
    /// Nothing is judged: observe senses as learn mode does.
    fn mode(&self) -> Mode {
        Mode::Learn
    }

    fn ready(&mut self, ready: &Ready<'_>) -> anyhow::Result<()> {
        self.printer.ready(ready.startup, Some(ready.identity))?;
        self.identity = Some(ready.identity.clone());
        Ok(())
    }

    fn take(&mut self, item: &Resolved, now: SystemTime) -> anyhow::Result<Taken> {
        match item {
            Resolved::New(flow) => self.printer.flow(flow)?,
            Resolved::More { flow, delta } => self.printer.flow_update(flow, *delta, now)?,
            Resolved::Loss(report) => self.printer.loss(report, now)?,
        }
        Ok(Taken::default())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.printer.flush()?)
    }

    fn tick(&mut self, _now: SystemTime) -> anyhow::Result<Vec<Alert>> {
        let now = self.resolver.status();
        let changed = self
            .identity
            .as_ref()
            .is_none_or(|last| last.states() != now.states());
        if changed {
            self.printer.identity(&now)?;
            self.identity = Some(now);
        }
        Ok(Vec::new())
    }

    fn summary(&mut self, summary: &Summary<'_>) -> anyhow::Result<()> {
        let sensor = summary.sensor;
        Ok(self
            .printer
            .summary(summary.elapsed, &sensor.counters()?, sensor.stats())?)
    }
}
