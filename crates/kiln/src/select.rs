//! Options shared by the commands that start workflows.

/// How the commands that start workflows reach and power the machines.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StartArgs {
    /// Kiln's URL as machines reach it (default: the one `kiln serve` recorded).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Do not use the machines' BMCs: power them on (or cycle them) yourself.
    #[arg(long)]
    pub no_power: bool,
}
