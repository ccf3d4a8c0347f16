//! order kept, then a summary line.

use kiln_api::{CheckStatus, PreflightReport};

/// Left-aligned columns, two spaces apart; the last column unpadded.
fn columns(rows: &[[String; 5]]) -> String {
    let mut widths = [0usize; 5];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The report as a table (STATUS, CHECK, MACHINE, SOURCE, DETAIL) and a summary line.
pub fn report_text(report: &PreflightReport) -> String {
    let mut rows = vec![["STATUS", "CHECK", "MACHINE", "SOURCE", "DETAIL"].map(String::from)];
    for c in &report.checks {
        let status = match c.status {
            CheckStatus::Fail => "FAIL".to_string(),
            s => s.as_str().to_string(),
        };
        rows.push([
            status,
            c.check.as_str().to_string(),
            c.machine.clone().unwrap_or_else(|| "-".into()),
            c.source.clone().unwrap_or_else(|| "-".into()),
            c.detail.clone(),
        ]);
    }
    let mut out = columns(&rows);
    out.push_str(&format!(
        "{} check(s): {} failed, {} warning(s)\n",
        report.checks.len(),
        report.failed,
        report.warnings
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::{CheckName, PreflightCheck};

    #[test]
    fn failing_rows_are_named_with_their_file_and_line() {
        let report = PreflightReport::new(vec![
            PreflightCheck {
                machine: Some("m-badpw".into()),
                source: Some("hardware.csv:3".into()),
                check: CheckName::BmcCredentials,
                status: CheckStatus::Fail,
                detail: "BMC ipmi://127.0.0.1:9011: authentication failed".into(),
            },
            PreflightCheck {
                machine: None,
                source: None,
                check: CheckName::Artifacts,
                status: CheckStatus::Ok,
                detail: "/a: vmlinuz 1 bytes".into(),
            },
        ]);
        let text = report_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "STATUS  CHECK            MACHINE  SOURCE          DETAIL"
        );
        assert_eq!(
            lines[1],
            "FAIL    bmc_credentials  m-badpw  hardware.csv:3  BMC ipmi://127.0.0.1:9011: authentication failed"
        );
        assert_eq!(
            lines[2],
            "ok      artifacts        -        -               /a: vmlinuz 1 bytes"
        );
        assert_eq!(lines[3], "2 check(s): 1 failed, 0 warning(s)");
    }
}
