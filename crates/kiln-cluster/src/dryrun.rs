//! `kiln cluster create --dry-run`: every node's NoCloud seed written to a directory,
//! for reading and for `cloud-init schema`, without touching a machine.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_model::Hardware;

use crate::plan::{Plan, PlanError, plan};
use crate::render::{NodeInputs, RenderError, render_node};
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
    let plan = plan(spec, hardware)?;
    let secrets = ClusterSecrets::generate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DryRunError::Io { path, source }
    };
    mkdir(out_dir).map_err(io(out_dir))?;
    let mut files = Vec::new();
    for node in &plan.nodes {
        let dir = out_dir.join(&node.hostname);
        mkdir(&dir).map_err(io(&dir))?;
        let inputs = NodeInputs::new(
            format!("{}-{}-dry-run", spec.name, node.hostname),
            format!("{DRY_RUN_PHONE_HOME}-{}", node.hostname),
        );
        let seed = render_node(spec, &plan, node, &secrets, &inputs)?;
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
    Ok(DryRun { plan, files })
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
