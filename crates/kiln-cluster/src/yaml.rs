//! A small YAML layer of our own: a tree with the line of every node (read from the
//! parser's events, so every problem in a file can be reported, not only the first),
//! and an emitter that writes exactly what we ask for (`taints: []` stays, strings that
//! YAML 1.1 readers such as cloud-init's PyYAML would take for numbers or booleans are
//! quoted).

use std::collections::HashMap;
use std::fmt::Write;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// One node as written, with the line (1-based) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A scalar's text; `plain` is false when it was quoted or a block scalar.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order, each with its own line.
    Map(Vec<(String, usize, Node)>),
}

impl Node {
    /// An absent value: `key:`, `key: ~`, `key: null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if text.is_empty() || text == "~" || text.eq_ignore_ascii_case("null"))
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error: line and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses every document of `text`. Empty documents (a trailing `---`) are dropped;
/// each document comes with the line of its start.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => events.push((event, span.start.line())),
            Err(e) => {
                return Err(SyntaxError {
                    line: e.marker().line().max(1),
                    message: e.info().to_string(),
                });
            }
        }
    }
    let mut b = Builder {
        events,
        pos: 0,
        anchors: HashMap::new(),
    };
    let mut docs = Vec::new();
    while b.pos < b.events.len() {
        match &b.events[b.pos].0 {
            Event::DocumentStart(..) => {
                b.pos += 1;
                let node = b.node()?;
                if !node.is_null() {
                    docs.push(node);
                }
            }
            _ => b.pos += 1,
        }
    }
    Ok(docs)
}

struct Builder<'a> {
    events: Vec<(Event<'a>, usize)>,
    pos: usize,
    anchors: HashMap<usize, Node>,
}

impl Builder<'_> {
    fn node(&mut self) -> Result<Node, SyntaxError> {
        let Some((event, line)) = self.events.get(self.pos) else {
            return Err(SyntaxError {
                line: self.events.last().map(|e| e.1).unwrap_or(1),
                message: "unexpected end of the document".into(),
            });
        };
        let line = *line;
        self.pos += 1;
        let (node, anchor) = match event.clone() {
            Event::Scalar(text, style, anchor, _) => (
                Node {
                    line,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                },
                anchor,
            ),
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                while !matches!(self.peek(), Some(Event::SequenceEnd)) {
                    items.push(self.node()?);
                }
                self.pos += 1;
                (
                    Node {
                        line,
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, _) => {
                let mut entries: Vec<(String, usize, Node)> = Vec::new();
                while !matches!(self.peek(), Some(Event::MappingEnd)) {
                    let key = self.node()?;
                    let Value::Scalar { text, .. } = key.value else {
                        return Err(SyntaxError {
                            line: key.line,
                            message: "a mapping key must be a plain name, not a list or mapping"
                                .into(),
                        });
                    };
                    let value = self.node()?;
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == text) {
                        return Err(SyntaxError {
                            line: key.line,
                            message: format!("duplicate key {text:?} (first on line {first})"),
                        });
                    }
                    entries.push((text, key.line, value));
                }
                self.pos += 1;
                (
                    Node {
                        line,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let target = self.anchors.get(&id).cloned().ok_or(SyntaxError {
                    line,
                    message: "alias to an unknown anchor".into(),
                })?;
                return Ok(Node { line, ..target });
            }
            other => {
                return Err(SyntaxError {
                    line,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn peek(&self) -> Option<&Event<'_>> {
        self.events.get(self.pos).map(|(e, _)| e)
    }
}

/// A document to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Y {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

impl Y {
    pub fn s(s: impl Into<String>) -> Y {
        Y::Str(s.into())
    }

    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Y)>) -> Y {
        Y::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Y {
        Y::Seq(items.into_iter().map(|s| Y::Str(s.into())).collect())
    }

    /// The document as YAML text (a mapping or list at the top).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Y::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
            Y::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
            other => {
                write_inline(&mut out, other);
                out.push('\n');
            }
        }
        out
    }
}

fn is_block(y: &Y) -> bool {
    match y {
        Y::Str(s) => s.contains('\n'),
        Y::Seq(v) => !v.is_empty(),
        Y::Map(v) => !v.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, entries: &[(String, Y)], indent: usize) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first entry of a map inside a list item goes on the "- " line.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&scalar(k));
        out.push(':');
        write_value_after_key(out, v, indent);
    }
}

fn write_value_after_key(out: &mut String, v: &Y, indent: usize) {
    match v {
        Y::Str(s) if s.contains('\n') => write_literal(out, s, indent + 2),
        Y::Seq(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        Y::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        other => {
            out.push(' ');
            write_inline(out, other);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Y], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Y::Map(entries) if !entries.is_empty() => write_map(out, entries, indent + 2),
            Y::Seq(inner) if !inner.is_empty() => {
                out.pop();
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            Y::Str(s) if s.contains('\n') => {
                out.pop();
                write_literal(out, s, indent + 2);
            }
            other => {
                write_inline(out, other);
                out.push('\n');
            }
        }
    }
}

/// Scalars and empty collections, on the current line.
fn write_inline(out: &mut String, y: &Y) {
    debug_assert!(!is_block(y));
    match y {
        Y::Str(s) => out.push_str(&scalar(s)),
        Y::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Y::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Y::Seq(_) => out.push_str("[]"),
        Y::Map(_) => out.push_str("{}"),
    }
}

/// A literal block (`|`), keeping the text byte for byte.
fn write_literal(out: &mut String, s: &str, indent: usize) {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    out.push_str(" |");
    // A first line starting with a space needs an explicit indentation indicator.
    if s.starts_with(' ') {
        let _ = write!(out, "{indent}");
    }
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    out.push('\n');
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A scalar written plain when no YAML reader (1.1 or 1.2) can mistake it for
/// anything but that string; otherwise double-quoted.
pub(crate) fn scalar(s: &str) -> String {
    const WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf",
    ];
    let safe = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '@' | '+' | '=')
        })
        && !WORDS.contains(&s.to_ascii_lowercase().as_str());
    if safe {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_text(n: &Node) -> &str {
        match &n.value {
            Value::Scalar { text, .. } => text,
            _ => panic!("not a scalar: {n:?}"),
        }
    }

    #[test]
    fn tree_keeps_lines_and_documents() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - y\n---\nc: \"1.30\"\n---\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(m) = &docs[0].value else {
            panic!()
        };
        assert_eq!((m[0].0.as_str(), m[0].1), ("a", 1));
        assert_eq!((m[1].0.as_str(), m[1].1), ("b", 2));
        let Value::Seq(items) = &m[1].2.value else {
            panic!()
        };
        assert_eq!(items[1].line, 4);
        let Value::Map(m2) = &docs[1].value else {
            panic!()
        };
        assert_eq!(scalar_text(&m2[0].2), "1.30");
        assert_eq!(m2[0].1, 6);
    }

    #[test]
    fn unquoted_versions_keep_their_text() {
        let docs = parse_documents("v: 1.30\n").unwrap();
        let Value::Map(m) = &docs[0].value else {
            panic!()
        };
        assert_eq!(scalar_text(&m[0].2), "1.30");
    }

    #[test]
    fn syntax_errors_and_duplicates_have_lines() {
        let e = parse_documents("a:\n  b: 1\n c: 2\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("duplicate key \"a\""), "{e:?}");
    }

    #[test]
    fn aliases_resolve() {
        let docs = parse_documents("a: &x {k: v}\nb: *x\n").unwrap();
        let Value::Map(m) = &docs[0].value else {
            panic!()
        };
        assert!(matches!(&m[1].2.value, Value::Map(inner) if inner[0].0 == "k"));
    }

    #[test]
    fn emitter_quotes_what_could_be_misread_and_keeps_empty_lists() {
        let y = Y::map([
            ("taints", Y::Seq(vec![])),
            ("extra", Y::map::<String>([])),
            ("ip", Y::s("10.0.0.1")),
            ("mode", Y::s("0600")),
            ("word", Y::s("yes")),
            ("path", Y::s("/etc/kubernetes/pki/ca.crt")),
            ("n", Y::Int(3)),
            ("b", Y::Bool(true)),
            ("hash", Y::s("sha256:ab")),
            ("list", Y::strs(["a", "b c"])),
            (
                "items",
                Y::Seq(vec![Y::map([("name", Y::s("x")), ("value", Y::s("1"))])]),
            ),
            ("script", Y::s("#!/bin/sh\necho hi\n\nexit 0\n")),
            ("nofinal", Y::s("line1\nline2")),
            ("nested", Y::Seq(vec![Y::strs(["a", "b"])])),
        ]);
        let text = y.to_yaml();
        assert!(text.contains("taints: []\n"), "{text}");
        assert!(text.contains("extra: {}\n"), "{text}");
        assert!(text.contains("ip: \"10.0.0.1\"\n"), "{text}");
        assert!(text.contains("mode: \"0600\"\n"), "{text}");
        assert!(text.contains("word: \"yes\"\n"), "{text}");
        assert!(
            text.contains("path: /etc/kubernetes/pki/ca.crt\n"),
            "{text}"
        );
        assert!(
            text.contains("items:\n  - name: x\n    value: \"1\"\n"),
            "{text}"
        );
        assert!(
            text.contains("script: |\n  #!/bin/sh\n  echo hi\n\n  exit 0\n"),
            "{text}"
        );
        assert!(text.contains("nested:\n  -\n    - a\n    - b\n"), "{text}");
        assert!(!text.contains(" \n"), "no trailing spaces: {text}");
        // What we write reads back to the same values.
        let back = parse_documents(&text).unwrap();
        let Value::Map(m) = &back[0].value else {
            panic!()
        };
        let get = |k: &str| &m.iter().find(|(key, _, _)| key == k).unwrap().2;
        assert_eq!(scalar_text(get("script")), "#!/bin/sh\necho hi\n\nexit 0\n");
        assert_eq!(scalar_text(get("nofinal")), "line1\nline2");
        assert_eq!(scalar_text(get("hash")), "sha256:ab");
        assert!(matches!(&get("taints").value, Value::Seq(v) if v.is_empty()));
    }

    #[test]
    fn literal_with_leading_space_round_trips() {
        let y = Y::map([("x", Y::s("  indented\nnext\n"))]);
        let back = parse_documents(&y.to_yaml()).unwrap();
        let Value::Map(m) = &back[0].value else {
            panic!()
        };
        assert_eq!(scalar_text(&m[0].2), "  indented\nnext\n");
    }
}
