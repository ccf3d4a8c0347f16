//! `kiln enroll FILE.csv`: validate everything, then store everything or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use kiln_model::csv::parse_hardware_csv_rows;
use kiln_store::{Store, StoreError};

#[derive(clap::Args)]
pub struct Args {
    /// hardware.csv in the EKS Anywhere format.
    file: PathBuf,
    /// Validate only; store nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {name}"))?;
    let rows = match parse_hardware_csv_rows(&name, &text) {
        Ok(parsed) => {
            // Read-past columns: shown, not fatal (EKS Anywhere ignores them silently).
            for w in &parsed.warnings {
                eprintln!("{w}");
            }
            parsed.rows
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "kiln: {} problem(s) in {name}; nothing was enrolled",
                errors.0.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if args.dry_run {
        println!(
            "{name}: {} machine(s) valid (dry run: nothing stored)",
            rows.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let machines: Vec<_> = rows.iter().map(|r| r.hardware.clone()).collect();
    match store.enroll(&machines) {
        Ok(s) => {
            println!(
                "{name}: {} added, {} updated, {} unchanged",
                s.added.len(),
                s.updated.len(),
                s.unchanged.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Conflicts(conflicts)) => {
            for c in &conflicts {
                let row = &rows[c.index];
                eprintln!("{name}:{}:1: {}: {}", row.line, c.field, c.message);
            }
            eprintln!(
                "kiln: {} conflict(s) with enrolled machines; nothing was enrolled",
                conflicts.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).context("enrolling"),
    }
}
