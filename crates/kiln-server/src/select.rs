//! Machines picked by name or by label (`--hardware`/`--selector` of workflows, BMC actions).

use kiln_model::Hardware;

/// Why machines could not be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("name at least one machine, or pass --selector k=v")]
    NothingNamed,
    #[error("no machine named {0:?} is enrolled")]
    NotEnrolled(String),
    #[error("--selector {0:?} is not k=v")]
    NotKeyValue(String),
    #[error("no enrolled machine matches --selector {0}")]
    NoMatch(String),
}

/// The named machines (each must be enrolled), or those whose labels match every `k=v` in
/// `selector`; at least one.
pub fn select(
    all: Vec<Hardware>,
    names: &[String],
    selector: &[String],
) -> Result<Vec<Hardware>, SelectError> {
    if selector.is_empty() {
        if names.is_empty() {
            return Err(SelectError::NothingNamed);
        }
        return names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|m| &m.hostname == n)
                    .cloned()
                    .ok_or_else(|| SelectError::NotEnrolled(n.clone()))
            })
            .collect();
    }
    let wanted = selector
        .iter()
        .map(|s| {
            s.split_once('=')
                .ok_or_else(|| SelectError::NotKeyValue(s.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let picked: Vec<Hardware> = all
        .into_iter()
        .filter(|h| {
            wanted
                .iter()
                .all(|(k, v)| h.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    if picked.is_empty() {
        return Err(SelectError::NoMatch(selector.join(",")));
    }
    Ok(picked)
}
