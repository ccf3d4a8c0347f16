//! `kiln workflow logs [--follow]`: the agent's output, page by page.

use std::time::Duration;

use kiln_api::routes::path;
use kiln_api::{LOG_PAGE, LogLine, LogPage};

use crate::{Client, ClientError};

/// How often a followed workflow's log is read again.
const POLL: Duration = Duration::from_millis(500);

/// Hands every log line of the workflow `key` (an id, or a machine's newest workflow) to
/// `line`; with `follow`, until the workflow ended and said all. `dropped` hears once how many
/// older lines the server no longer keeps.
pub fn each_line(
    api: &Client,
    key: &str,
    follow: bool,
    mut dropped: impl FnMut(&LogPage),
    mut line: impl FnMut(&LogLine) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    let mut workflow = key.to_string();
    let mut after = 0;
    let mut first = true;
    loop {
        let page: LogPage = api.get(&format!(
            "{}?after={after}",
            path("workflows", Some(&workflow), "/logs")
        ))?;
        if first && page.log_lines_dropped > 0 {
            dropped(&page);
        }
        first = false;
        // Later pages by id: the hostname's newest workflow may change meanwhile.
        workflow = page.workflow.clone();
        after = page.after;
        for l in &page.lines {
            line(l)?;
        }
        if page.lines.len() >= LOG_PAGE {
            continue; // a full page: more are waiting
        }
        if !follow || page.ended {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}
