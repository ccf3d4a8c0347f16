//! `kiln enroll FILE.csv`: validate everything, then store everything or nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kiln_api::{EnrollOutcome, EnrollRequest};

use crate::Ctx;
use crate::client::ClientError;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    /// hardware.csv in the EKS Anywhere format.
    #[arg(required_unless_present = "from_discovered")]
    file: Option<PathBuf>,
    #[command(flatten)]
    discovered: crate::discovered::EnrollArgs,
    /// Validate only; store nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// What `enroll -o json` prints, whether or not it enrolled: the server's outcome.
struct Outcome(EnrollOutcome);

impl Outcome {
    /// Prints the outcome; problems go to stderr in table mode, one `FILE:LINE:COLUMN` each.
    fn finish(self, output: Format, summary: &str) -> anyhow::Result<ExitCode> {
        let o = self.0;
        let ok = o.errors.is_empty();
        match output {
            Format::Json => println!("{}", serde_json::to_string_pretty(&o)?),
            Format::Table => {
                for w in &o.warnings {
                    eprintln!("{}", warning_line(w));
                }
                for e in &o.errors {
                    eprintln!("{e}");
                }
                if ok {
                    println!("{summary}");
                } else {
                    eprintln!("kiln: {summary}");
                }
            }
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// `FILE:LINE:COLUMN: warning: MESSAGE`, as the parser words it.
fn warning_line(w: &kiln_api::Detail) -> String {
    let place = kiln_api::Detail {
        message: String::new(),
        ..w.clone()
    };
    format!("{}warning: {}", place, w.message)
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let (name, path, req) = match &args.file {
        Some(file) if !args.discovered.from_discovered => {
            let name = file.display().to_string();
            let csv = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
            let req = EnrollRequest {
                file_name: name.clone(),
                csv,
                replace: false,
            };
            let path = format!(
                "{}{}",
                kiln_api::routes::path("hardware", None, ""),
                if args.dry_run { "?dry_run=true" } else { "" }
            );
            (name, path, serde_json::to_value(req)?)
        }
        _ => args.discovered.request(args.dry_run)?,
    };
    let api = ctx.client()?;
    match api.send::<_, EnrollOutcome>("POST", &path, &req) {
        Ok(o) => {
            let summary = if o.dry_run {
                format!(
                    "{name}: {} machine(s) valid (dry run: nothing stored)",
                    o.valid
                )
            } else {
                format!(
                    "{name}: {} added, {} updated, {} unchanged",
                    o.added.len(),
                    o.updated.len(),
                    o.unchanged.len()
                )
            };
            Outcome(o).finish(args.output, &summary)
        }
        Err(ClientError::Api { status: 422, body }) => Outcome(EnrollOutcome {
            file: name,
            dry_run: args.dry_run,
            errors: body.details,
            ..EnrollOutcome::default()
        })
        .finish(args.output, &body.message),
        Err(e) => Err(e.into()),
    }
}
