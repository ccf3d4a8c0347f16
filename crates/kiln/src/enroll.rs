//! `kiln enroll FILE.csv`: validate everything, then store everything or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use kiln_model::csv::{CsvError, CsvWarning, parse_hardware_csv_rows};
use kiln_store::{Store, StoreError};
use serde::Serialize;

use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    /// hardware.csv in the EKS Anywhere format.
    file: PathBuf,
    /// Validate only; store nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

/// What `enroll -o json` prints, whether or not it enrolled.
#[derive(Serialize, Default)]
struct Outcome {
    file: String,
    enrolled: bool,
    dry_run: bool,
    valid: usize,
    added: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
    warnings: Vec<CsvWarning>,
    errors: Vec<CsvError>,
}

impl Outcome {
    /// Prints the outcome; problems go to stderr in table mode, one `FILE:LINE:COLUMN` each.
    fn finish(self, output: Format, summary: &str) -> anyhow::Result<ExitCode> {
        let ok = self.errors.is_empty();
        match output {
            Format::Json => println!("{}", serde_json::to_string_pretty(&self)?),
            Format::Table => {
                for w in &self.warnings {
                    eprintln!("{w}");
                }
                for e in &self.errors {
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

pub fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let mut outcome = Outcome {
        file: name.clone(),
        dry_run: args.dry_run,
        ..Outcome::default()
    };
    let rows = match parse_hardware_csv_rows(&name, &text) {
        Ok(parsed) => {
            // Read-past columns: shown, not fatal (EKS Anywhere ignores them silently).
            outcome.warnings = parsed.warnings;
            parsed.rows
        }
        Err(errors) => {
            outcome.errors = errors.0;
            let summary = format!(
                "{} problem(s) in {name}; nothing was enrolled",
                outcome.errors.len()
            );
            return outcome.finish(args.output, &summary);
        }
    };
    outcome.valid = rows.len();
    if args.dry_run {
        let summary = format!(
            "{name}: {} machine(s) valid (dry run: nothing stored)",
            rows.len()
        );
        return outcome.finish(args.output, &summary);
    }
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let machines: Vec<_> = rows.iter().map(|r| r.hardware.clone()).collect();
    match store.enroll(&machines) {
        Ok(s) => {
            let summary = format!(
                "{name}: {} added, {} updated, {} unchanged",
                s.added.len(),
                s.updated.len(),
                s.unchanged.len()
            );
            outcome.enrolled = true;
            (outcome.added, outcome.updated, outcome.unchanged) = (s.added, s.updated, s.unchanged);
            outcome.finish(args.output, &summary)
        }
        Err(StoreError::Conflicts(conflicts)) => {
            outcome.errors = conflicts
                .iter()
                .map(|c| CsvError {
                    file: name.clone(),
                    line: rows[c.index].line,
                    column: 1,
                    field: c.field.to_string(),
                    message: c.message.clone(),
                })
                .collect();
            let summary = format!(
                "{} conflict(s) with enrolled machines; nothing was enrolled",
                conflicts.len()
            );
            outcome.finish(args.output, &summary)
        }
        Err(e) => Err(e).context("enrolling"),
    }
}
