//! `kiln discovered`: MACs that asked for DHCP but are not enrolled (`GET /api/v1/discovered`);
//! and `kiln enroll --from-discovered`'s flags (`POST /api/v1/discovered/enroll`).

use std::process::ExitCode;

use kiln_api::routes::path;
use kiln_api::{DiscoveredEnroll, DiscoveredMac};

use crate::Ctx;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let found: Vec<DiscoveredMac> = ctx.client()?.get(&path("discovered", None, ""))?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&found)?),
        Format::Table => print!("{}", kiln_client::render::discovered::table(&found)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln enroll --from-discovered --pool FIRST-LAST/PREFIX ...`.
#[derive(clap::Args)]
pub struct EnrollArgs {
    /// Enrol the discovered MACs (`kiln discovered`) instead of a hardware.csv.
    #[arg(long, requires = "pool")]
    pub from_discovered: bool,
    /// Addresses for them: FIRST-LAST/PREFIX (10.0.0.100-10.0.0.150/24); used ones skipped.
    #[arg(long, requires = "from_discovered")]
    pool: Option<String>,
    #[arg(long, requires = "from_discovered")]
    gateway: Option<String>,
    #[arg(long = "nameserver", requires = "from_discovered")]
    nameservers: Vec<String>,
    /// A label for every machine enrolled (k=v; repeatable).
    #[arg(long = "label", requires = "from_discovered")]
    labels: Vec<String>,
    /// CONDITION:K=V: label K=V where the condition holds: FACT=VALUE or FACT!=VALUE (arch,
    /// firmware, client; vendor, product once inspected), or an inspected inventory's
    /// inventory.memory_gib, inventory.cpu_cores, inventory.disks or disk.size compared with
    /// =, !=, >=, <=, >, < (`inventory.memory_gib>=64:size=large`, `disk.size>=500G:role=storage`).
    #[arg(long = "rule", requires = "from_discovered")]
    rules: Vec<String>,
    /// Only this MAC (repeatable; default: every discovered one).
    #[arg(long = "mac", requires = "from_discovered")]
    macs: Vec<String>,
    /// Hostnames are PREFIX- and the MAC's hex digits.
    #[arg(long, requires = "from_discovered")]
    hostname_prefix: Option<String>,
    /// Install disk (default /dev/sda).
    #[arg(long, requires = "from_discovered")]
    disk: Option<String>,
}

impl EnrollArgs {
    /// (the name diagnostics use, the route, the body).
    pub fn request(&self, dry_run: bool) -> anyhow::Result<(String, String, serde_json::Value)> {
        let req = DiscoveredEnroll {
            pool: self.pool.clone().unwrap_or_default(),
            gateway: self.gateway.clone(),
            nameservers: self.nameservers.clone(),
            labels: self.labels.clone(),
            rules: self.rules.clone(),
            macs: self.macs.clone(),
            hostname_prefix: self.hostname_prefix.clone(),
            disk: self.disk.clone(),
            dry_run,
        };
        let route = format!("{}/enroll", path("discovered", None, ""));
        Ok(("discovered".into(), route, serde_json::to_value(req)?))
    }
}
