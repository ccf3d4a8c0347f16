//! `kiln preflight (FILE.csv | NAME… | --selector k=v | cluster FILE)`: before anything is
//! powered, the server checks each machine's BMC (read only), its address, the OS image and
//! its own set-up, and looks for other DHCP servers on the segment. Exit 1 when a check fails.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_api::{PreflightFile, PreflightReport, PreflightRequest};

use crate::Ctx;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    /// A hardware.csv (its rows, enrolled or not), enrolled machines by hostname, or
    /// `cluster SPEC.yaml` (the machines the spec would be placed on, and its images).
    what: Vec<String>,
    /// Enrolled machines whose labels match every k=v given (repeatable).
    #[arg(long)]
    selector: Vec<String>,
    /// The OS image to check: an imported image's name, or a URL with #sha256=HEX.
    #[arg(long)]
    image: Option<String>,
    /// A workflow template whose images["NAME"] must be imported.
    #[arg(long)]
    template: Option<std::path::PathBuf>,
    /// Send no DHCP probe on the provisioning interface.
    #[arg(long)]
    no_dhcp_probe: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

fn file(path: &Path) -> anyhow::Result<PreflightFile> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    Ok(PreflightFile {
        file_name: name,
        text,
    })
}

fn request(args: &Args) -> anyhow::Result<PreflightRequest> {
    let mut req = PreflightRequest {
        selector: args.selector.clone(),
        image: args.image.clone(),
        template: args.template.as_deref().map(file).transpose()?,
        no_dhcp_probe: args.no_dhcp_probe,
        ..PreflightRequest::default()
    };
    match args.what.as_slice() {
        [word, spec] if word == "cluster" => req.cluster = Some(file(Path::new(spec))?),
        [word, ..] if word == "cluster" => anyhow::bail!("usage: kiln preflight cluster SPEC.yaml"),
        [one] if one.ends_with(".csv") || Path::new(one).is_file() => {
            req.csv = Some(file(Path::new(one))?)
        }
        names => req.machines = names.to_vec(),
    }
    Ok(req)
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let req = request(&args)?;
    let api = ctx.client()?;
    let report: PreflightReport = api.send("POST", kiln_api::PREFLIGHT, &req)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print!("{}", kiln_client::render::preflight::report_text(&report)),
    }
    if report.failed > 0 {
        eprintln!("kiln: preflight: {} check(s) failed", report.failed);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
