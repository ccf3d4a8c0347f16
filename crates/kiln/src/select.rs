//! Picking enrolled machines: by name, or by `k=v` label selectors.

use anyhow::{Context, bail};
use kiln_model::Hardware;

fn matches_selector(hw: &Hardware, selector: &[(String, String)]) -> bool {
    selector.iter().all(|(k, v)| hw.labels.get(k) == Some(v))
}

/// The named machines (each must be enrolled), or those whose labels match
/// every `k=v` in `selector`; at least one.
pub fn machines(
    all: Vec<Hardware>,
    names: &[String],
    selector: &[String],
) -> anyhow::Result<Vec<Hardware>> {
    if selector.is_empty() {
        if names.is_empty() {
            bail!("name at least one machine, or pass --selector k=v");
        }
        return names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|m| &m.hostname == n)
                    .cloned()
                    .with_context(|| format!("no machine named {n:?} is enrolled"))
            })
            .collect();
    }
    let sel = selector
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--selector {s:?} is not k=v"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let picked: Vec<Hardware> = all
        .into_iter()
        .filter(|h| matches_selector(h, &sel))
        .collect();
    if picked.is_empty() {
        bail!(
            "no enrolled machine matches --selector {}",
            selector.join(",")
        );
    }
    Ok(picked)
}

/// How the commands that start workflows reach and power the machines.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StartArgs {
    /// Kiln's URL as machines reach it (default: the one `kiln serve` recorded).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Do not use the machines' BMCs: power them on (or cycle them) yourself.
    #[arg(long)]
    pub no_power: bool,
}

/// Kiln's URL as machines reach it: the one given, else the one `kiln serve` recorded.
pub fn server_url(store: &kiln_store::Store, given: Option<String>) -> anyhow::Result<String> {
    match given {
        Some(u) => Ok(u),
        None => store
            .setting("server_url")?
            .context("no server URL known: start `kiln serve` once, or pass --server-url"),
    }
}
