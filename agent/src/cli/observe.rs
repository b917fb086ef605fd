//! `eastwatch observe`.

use std::time::Duration;

use clap::Args;

use super::WatchArgs;
use crate::sinks::printer::Format;

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub watch: WatchArgs,
}
