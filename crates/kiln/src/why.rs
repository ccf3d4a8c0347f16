//! `kiln why NAME`: the machine's flight recorder (`GET /api/v1/hardware/NAME/timeline`).
//! Exit 0: the machine is on time or done; 2: a phase has run past its normal bound (the
//! diagnosis says what is likely wrong); 1: no such machine, or the server could not answer.

use std::process::ExitCode;

use kiln_api::TimelineView;
use kiln_api::routes::path;

use crate::Ctx;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    /// The machine's hostname.
    name: String,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let t: TimelineView = ctx
        .client()?
        .get(&path("hardware", Some(&args.name), "/timeline"))?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&t)?),
        Format::Table => print!("{}", kiln_client::render::why::timeline(&t)),
    }
    Ok(ExitCode::from(if t.diagnosis.is_some() { 2 } else { 0 }))
}
