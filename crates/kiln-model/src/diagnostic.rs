//! One problem in a file an operator wrote (hardware.csv, a workflow template, a cluster spec),
//! located like a compiler's: `file:line:column: field: message`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// What the problem is in: a CSV column name, a template key (`actions[2].timeout`), a
    /// spec path (`Cluster.spec.controlPlaneConfiguration.count`); empty for the file or
    /// record as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_like_a_compiler_diagnostic() {
        let mut d = Diagnostic {
            file: "hardware.csv".into(),
            line: 3,
            column: 17,
            field: "bmc_ip".into(),
            message: "not an address".into(),
        };
        assert_eq!(d.to_string(), "hardware.csv:3:17: bmc_ip: not an address");
        d.field.clear();
        assert_eq!(d.to_string(), "hardware.csv:3:17: not an address");
    }
}
