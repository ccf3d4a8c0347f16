//! `kiln demo`: its exit codes; the demo itself (its flags, the lab, and Kiln driven through
//! its admin API) is [`kiln_lab::demo`].

use std::process::ExitCode;

use anyhow::Context;
use kiln_lab::demo::{Options, Outcome};

pub fn run(mut opts: Options) -> anyhow::Result<ExitCode> {
    opts.kiln = std::env::current_exe().context("finding the kiln executable")?;
    Ok(match kiln_lab::demo::run(&opts)? {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
        Outcome::TimedOut => ExitCode::from(124),
        Outcome::Failed(_) => ExitCode::FAILURE,
    })
}
