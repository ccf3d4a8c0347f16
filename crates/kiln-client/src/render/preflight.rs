//! order kept, then a summary line.

use kiln_api::{CheckStatus, PreflightReport};

use super::{dash, table};

/// The report as a table (STATUS, CHECK, MACHINE, SOURCE, DETAIL) and a summary line.
pub fn report_text(report: &PreflightReport) -> String {
    let mut rows = Vec::new();
    for c in &report.checks {
        let status = match c.status {
            CheckStatus::Fail => "FAIL".to_string(),
            s => s.as_str().to_string(),
        };
        rows.push(vec![
            status,
            c.check.as_str().to_string(),
            dash(c.machine.clone()),
            dash(c.source.clone()),
            c.detail.clone(),
        ]);
    }
    let mut out = table(&["STATUS", "CHECK", "MACHINE", "SOURCE", "DETAIL"], &rows);
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
