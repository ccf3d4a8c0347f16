//! `kiln cluster create --dry-run`: every node's NoCloud seed written to a directory,
//! for reading and for `cloud-init schema`, without touching a machine.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_model::Hardware;

use crate::plan::{Plan, PlanError, plan};
use crate::render::{NodeInputs, NodeSeed, RenderError, render_node};
use crate::secrets::{ClusterSecrets, SecretsError};
use crate::spec::ClusterSpec;

/// The phone-home base the dry run writes: `.invalid` never resolves.
pub const DRY_RUN_PHONE_HOME: &str = "http://kiln.invalid/v1/phone-home/DRY-RUN";

#[derive(Debug)]
pub struct DryRun {
    pub plan: Plan,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DryRunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Plans the cluster, makes fresh secrets and writes `DIR/<hostname>/{user-data,
/// meta-data,network-config}` (directories 0700, files 0600: user-data holds keys).
pub fn dry_run(
    spec: &ClusterSpec,
    hardware: &[Hardware],
    out_dir: &Path,
) -> Result<DryRun, DryRunError> {
    let (plan, seeds) = render_dry_run(spec, hardware)?;
    let files = write_seeds(out_dir, &seeds)?;
    Ok(DryRun { plan, files })
}

/// Plans the cluster, makes fresh secrets and renders every node's seed (in plan order),
/// with the dry run's instance ids and a phone-home URL that never resolves. No I/O: a
/// server renders, its client writes.
pub fn render_dry_run(
    spec: &ClusterSpec,
    hardware: &[Hardware],
) -> Result<(Plan, Vec<(String, NodeSeed)>), DryRunError> {
    let plan = plan(spec, hardware)?;
    let secrets = ClusterSecrets::generate()?;
    let mut seeds = Vec::new();
    for node in &plan.nodes {
        let inputs = NodeInputs::new(
            format!("{}-{}-dry-run", spec.name, node.hostname),
            format!("{DRY_RUN_PHONE_HOME}-{}", node.hostname),
        );
        let seed = render_node(spec, &plan, node, &secrets, &inputs)?;
        seeds.push((node.hostname.clone(), seed));
    }
    Ok((plan, seeds))
}

/// Writes each `(hostname, seed)` as `DIR/<hostname>/{user-data,meta-data,network-config}`
/// (directories 0700, files 0600); returns the files written, in order.
pub fn write_seeds(
    out_dir: &Path,
    seeds: &[(String, NodeSeed)],
) -> Result<Vec<PathBuf>, DryRunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DryRunError::Io { path, source }
    };
    mkdir(out_dir).map_err(io(out_dir))?;
    let mut files = Vec::new();
    for (hostname, seed) in seeds {
        // A hostname is DNS-1123 (checked at enrolment); refuse anything else all the same.
        if hostname.is_empty() || hostname.contains(['/', '\\']) || hostname.starts_with('.') {
            return Err(DryRunError::Io {
                path: out_dir.join(hostname),
                source: std::io::Error::other("not a hostname"),
            });
        }
        let dir = out_dir.join(hostname);
        mkdir(&dir).map_err(io(&dir))?;
        for (name, content) in [
            ("user-data", &seed.user_data),
            ("meta-data", &seed.meta_data),
            ("network-config", &seed.network_config),
        ] {
            let path = dir.join(name);
            write_private(&path, content).map_err(io(&path))?;
            files.push(path);
        }
    }
    Ok(files)
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory keeps its mode otherwise.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(content.as_bytes())
}
