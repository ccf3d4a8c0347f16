//! BMC actions: a row per machine.

use kiln_api::BmcRow;

use super::table;

pub fn rows(rows: &[BmcRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.machine.clone(),
                r.bmc.clone(),
                r.result.clone(),
                r.error.clone().unwrap_or_default(),
                r.detail.clone(),
            ]
        })
        .collect();
    table(&["MACHINE", "BMC", "RESULT", "ERROR", "DETAIL"], &cells)
}

/// How many machines failed, when any did (for stderr and a non-zero exit).
pub fn failed(rows: &[BmcRow]) -> Option<String> {
    let failed = rows.iter().filter(|r| !r.ok).count();
    (failed > 0).then(|| format!("{failed} of {} machine(s) failed", rows.len()))
}
