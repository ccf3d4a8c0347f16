//! `kiln.toml`, the server's config file: what it holds as TOML, read with every problem
//! located (FILE:LINE:COLUMN: key: message), pure (no I/O).
//!
//! The keys are `kiln serve`'s flags under their long names in snake_case; the CLI checks
//! each value with the flag's own parser (so the file accepts exactly what the flags accept)
//! and applies the precedence flag > `KILN_*` variable > file > default.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// One problem in the file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key (empty for problems of the document as a whole, such as TOML syntax).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in the file; checking goes on past the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Where something is in the file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub line: usize,
    pub column: usize,
}

/// One `key = value` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub key_at: At,
    pub value_at: At,
    /// The value when it is a boolean (what a switch takes).
    pub boolean: Option<bool>,
    /// The value as the text a flag would be given, or why it cannot be one (a table, an
    /// array, a date).
    pub scalar: Result<String, String>,
}

impl Entry {
    /// A problem with this entry's key (`at_key`) or value, located.
    pub fn error(&self, file: &str, at_key: bool, message: String) -> ConfigError {
        let at = if at_key { self.key_at } else { self.value_at };
        ConfigError {
            file: file.to_string(),
            line: at.line,
            column: at.column,
            key: self.key.clone(),
            message,
        }
    }
}

/// The entries of FILE's TEXT, in key order; a TOML syntax error, located.
pub fn entries(file: &str, text: &str) -> Result<Vec<Entry>, ConfigErrors> {
    let table = DeTable::parse(text).map_err(|e| {
        let at = line_column(text, e.span().unwrap_or(0..0).start);
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: at.line,
            column: at.column,
            key: String::new(),
            message: e.message().trim_end().to_string(),
        }])
    })?;
    Ok(table
        .get_ref()
        .iter()
        .map(|(key, value)| Entry {
            key: key.get_ref().to_string(),
            key_at: line_column(text, key.span().start),
            value_at: line_column(text, value.span().start),
            boolean: match value.get_ref() {
                DeValue::Boolean(b) => Some(*b),
                _ => None,
            },
            scalar: scalar(value.get_ref()),
        })
        .collect())
}

/// A TOML scalar as the text a flag would be given.
fn scalar(v: &DeValue<'_>) -> Result<String, String> {
    match v {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("integer out of range: {e}")),
        DeValue::Float(f) => Ok(f.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        DeValue::Datetime(_) => Err("expected a string or a number, not a date".to_string()),
        DeValue::Array(_) => Err("expected one value, not an array".to_string()),
        DeValue::Table(_) => Err("expected one value, not a table".to_string()),
    }
}

/// Line and column of byte OFFSET in TEXT.
fn line_column(text: &str, offset: usize) -> At {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    At {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

/// S as a TOML basic string (what `kiln serve --print-config` writes).
pub fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        // "=" is the 4th character of line 2, at byte 7.
        assert_eq!(line_column("a\néé = 1", 7), At { line: 2, column: 4 });
        assert_eq!(line_column("x", 0), At { line: 1, column: 1 });
    }

    #[test]
    fn entries_are_located_and_their_values_read_as_flag_text() {
        let text = "http_port = 0x1F90\n  interface = \"eno1\"\nno_router_advert = true\n\
                    tftp_root = [\"a\"]\n";
        let e = entries("kiln.toml", text).unwrap();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["http_port", "interface", "no_router_advert", "tftp_root"]
        );
        assert_eq!(e[0].scalar.as_deref(), Ok("8080"));
        assert_eq!(e[0].boolean, None);
        assert_eq!(e[1].key_at, At { line: 2, column: 3 });
        assert_eq!(
            e[1].value_at,
            At {
                line: 2,
                column: 15
            }
        );
        assert_eq!(e[2].boolean, Some(true));
        assert_eq!(e[2].scalar.as_deref(), Ok("true"));
        assert_eq!(
            e[3].scalar,
            Err("expected one value, not an array".to_string())
        );
        let err = e[3].error("kiln.toml", false, "bad".into());
        assert_eq!(err.to_string(), "kiln.toml:4:13: tftp_root: bad");
    }

    #[test]
    fn a_toml_syntax_error_has_a_position_and_no_key() {
        let err = entries("kiln.toml", "http_port = 8080\naddress = \n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!((err.0[0].line, err.0[0].key.as_str()), (2, ""));
        assert!(err.to_string().starts_with("kiln.toml:2:"), "{err}");
    }

    #[test]
    fn toml_strings_escape_quotes_and_controls() {
        assert_eq!(
            toml_string("a \"b\"\\\n\t\u{1}"),
            "\"a \\\"b\\\"\\\\\\n\\t\\u0001\""
        );
    }
}
