//! Every admin API error has one body: a stable code, a sentence, and (for uploaded files) one
//! detail per problem naming where it is.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `invalid`,
    /// `conflict`, `internal`, ...
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
}

/// One problem, located: `hardware.csv:3:17: bmc_ip: not an address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Detail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Detail {
    pub fn message(message: impl Into<String>) -> Detail {
        Detail {
            file: None,
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Detail {
    /// `file:line:column: field: message`, leaving out what is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut place = String::new();
        if let Some(file) = &self.file {
            place.push_str(file);
            if let Some(line) = self.line {
                place.push_str(&format!(":{line}"));
                if let Some(col) = self.column {
                    place.push_str(&format!(":{col}"));
                }
            }
        }
        if !place.is_empty() {
            write!(f, "{place}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_reads_like_a_compiler_diagnostic() {
        let d = Detail {
            file: Some("hardware.csv".into()),
            line: Some(3),
            column: Some(17),
            field: Some("bmc_ip".into()),
            message: "not an address".into(),
        };
        assert_eq!(d.to_string(), "hardware.csv:3:17: bmc_ip: not an address");
        assert_eq!(Detail::message("x").to_string(), "x");
        let body = ApiErrorBody {
            code: "invalid".into(),
            message: "1 error".into(),
            details: vec![d],
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["details"][0]["line"], 3);
        assert_eq!(serde_json::from_value::<ApiErrorBody>(json).unwrap(), body);
    }
}
