//! Workflows named on the command line: resolved to ids, or cancelled one by one.

use kiln_api::routes::path;
use kiln_api::{CancelRequest, WorkflowView};

use crate::{Client, ClientError};

/// The ids of the workflows `keys` name (ids or hostnames: a machine's newest), or of every
/// unfinished workflow when none is named.
pub fn ids(api: &Client, keys: &[String]) -> Result<Vec<String>, ClientError> {
    if keys.is_empty() {
        let open: Vec<WorkflowView> = api.get(&path("workflows", None, ""))?;
        return Ok(open.into_iter().map(|w| w.id).collect());
    }
    keys.iter()
        .map(|k| Ok(api.get::<WorkflowView>(&path("workflows", Some(k), ""))?.id))
        .collect()
}

/// Cancels each workflow `keys` names: those ended now, and why the others could not be
/// (already ended, say). An unknown name or a refused token stops everything.
pub fn cancel(
    api: &Client,
    keys: &[String],
    reason: &str,
) -> Result<(Vec<WorkflowView>, Vec<String>), ClientError> {
    let req = CancelRequest {
        reason: Some(reason.to_string()),
    };
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    for key in keys {
        match api.send::<_, WorkflowView>("POST", &path("workflows", Some(key), "/cancel"), &req) {
            Ok(w) => done.push(w),
            Err(ClientError::Api {
                status: 409 | 422,
                body,
            }) => refused.push(body.message),
            Err(e) => return Err(e),
        }
    }
    Ok((done, refused))
}
