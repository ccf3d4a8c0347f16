//! `kiln bmc status|on|off|soft|cycle|reset|pxe|disk|info (NAME… | --selector k=v)`: the server
//! talks to the BMCs, many in parallel, and answers one row per machine. Every change is also
//! an event of its machine.

use std::process::ExitCode;

use kiln_api::{BmcActionRequest, BmcOp, BmcRow};

use crate::Ctx;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    op: Op,
    /// Machines by hostname.
    names: Vec<String>,
    /// Machines whose labels match every k=v given (repeatable).
    #[arg(long, conflicts_with = "names")]
    selector: Vec<String>,
    /// pxe/disk: every boot until changed (default: the next boot only).
    #[arg(long)]
    persistent: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// kiln-api's [`BmcOp`] as a command-line value: one list of ops, kept there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Op(BmcOp);

impl clap::ValueEnum for Op {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: std::sync::LazyLock<Vec<Op>> =
            std::sync::LazyLock::new(|| BmcOp::ALL.iter().copied().map(Op).collect());
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.as_str()).help(self.0.help()))
    }
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let api = ctx.client()?;
    let req = BmcActionRequest {
        op: args.op.0,
        machines: args.names,
        selector: args.selector,
        persistent: args.persistent,
    };
    let rows: Vec<BmcRow> = api.send("POST", kiln_api::BMC_ACTIONS, &req)?;
    print_rows(&rows, args.output)
}

/// The rows as a table or JSON; exit 1 (and a count on stderr) when a machine failed.
pub fn print_rows(rows: &[BmcRow], output: Format) -> anyhow::Result<ExitCode> {
    output.print(rows, kiln_client::render::bmc::rows)?;
    Ok(exit_code(rows))
}

/// Exit 1 (and a count on stderr) when a machine failed.
pub fn exit_code(rows: &[BmcRow]) -> ExitCode {
    match kiln_client::render::bmc::failed(rows) {
        Some(why) => {
            eprintln!("kiln: {why}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
