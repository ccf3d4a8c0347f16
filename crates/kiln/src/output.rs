//! Plain-text tables and timestamps for the terminal.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// A duration on the command line (`--timeout 90s`, `20m`, `1h30m`): the templates' grammar,
/// one grammar everywhere.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    kiln_model::template::parse_duration(s)
}

/// `--wait [--timeout D]` on the commands that start workflows or report on them.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct WaitArgs {
    /// Follow until every workflow ended; exit 0 only if all succeeded (1: one failed, timed
    /// out or was cancelled; 3: --timeout ran out first).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 20m, 1h30m).
    #[arg(long, value_parser = duration_arg, requires = "wait")]
    pub timeout: Option<std::time::Duration>,
}

impl Format {
    /// Prints `value` as pretty JSON, or as `text` renders it.
    pub fn print<T: serde::Serialize + ?Sized>(
        self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self {
            Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Format::Table => print!("{}", text(value)),
        }
        Ok(())
    }
}

/// The exit status of followed workflows: 0 all succeeded, 1 one failed, 3 still running.
pub fn ended(e: kiln_client::follow::Ended) -> std::process::ExitCode {
    std::process::ExitCode::from(e.exit_code())
}
