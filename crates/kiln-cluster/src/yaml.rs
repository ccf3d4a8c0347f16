//! A small YAML layer of our own: a tree with the line of every node (read from the
//! parser's events, so every problem in a file can be reported, not only the first),
//! and an emitter that writes exactly what we ask for (`taints: []` stays, strings that
//! YAML 1.1 readers such as cloud-init's PyYAML would take for numbers or booleans are
//! quoted).

use std::collections::HashMap;
use std::fmt::Write;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// One node as written, with the line and column (both 1-based) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub column: usize,
    pub value: Value,
}

/// Where a key or node starts (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl From<&Node> for Pos {
    fn from(n: &Node) -> Pos {
        n.pos()
    }
}

impl Node {
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }
}

/// Bounds on what a spec file may make us build: a cluster spec is a few kilobytes, so
/// these are far above any real one and far below what hurts (an alias bomb of a few
/// hundred bytes would otherwise expand to gigabytes).
pub(crate) const MAX_INPUT_BYTES: usize = 1 << 20;
/// Nodes in the tree, counting every copy an alias makes.
pub(crate) const MAX_NODES: usize = 100_000;
/// Nesting of lists and mappings (the builder recurses once per level).
pub(crate) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A scalar's text; `plain` is false when it was quoted or a block scalar.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in file order, each with its own position.
    Map(Vec<(String, Pos, Node)>),
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

/// A syntax error (or a file over the bounds): position and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses every document of `text`. Empty documents (a trailing `---`) are dropped;
/// each document comes with the line of its start.
///
/// The input is bounded ([`MAX_INPUT_BYTES`], [`MAX_DEPTH`], [`MAX_NODES`] counting
/// alias copies): past a bound it is an error, before the memory is spent.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(SyntaxError {
            line: 1,
            column: 1,
            message: format!(
                "the file has {} bytes; a cluster spec may have {MAX_INPUT_BYTES} at most",
                text.len()
            ),
        });
    }
    let mut events = Vec::new();
    let mut depth = 0usize;
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => {
                let pos = Pos {
                    line: span.start.line().max(1),
                    column: span.start.col() + 1,
                };
                match event {
                    Event::SequenceStart(..) | Event::MappingStart(..) => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(SyntaxError {
                                line: pos.line,
                                column: pos.column,
                                message: format!(
                                    "lists and mappings nested more than {MAX_DEPTH} deep"
                                ),
                            });
                        }
                    }
                    Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                    _ => {}
                }
                events.push((event, pos));
            }
            Err(e) => {
                return Err(SyntaxError {
                    line: e.marker().line().max(1),
                    column: e.marker().col() + 1,
                    message: e.info().to_string(),
                });
            }
        }
    }
    let mut b = Builder {
        events,
        pos: 0,
        anchors: HashMap::new(),
        built: 0,
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
    events: Vec<(Event<'a>, Pos)>,
    pos: usize,
    /// Each anchored node with its size in nodes (what one alias to it costs).
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes built so far, alias copies included.
    built: usize,
}

/// The error for a tree over [`MAX_NODES`].
fn too_many_nodes(at: Pos) -> SyntaxError {
    SyntaxError {
        line: at.line,
        column: at.column,
        message: format!(
            "the file expands to more than {MAX_NODES} YAML nodes (aliases to aliases?): \
             refused before it fills memory"
        ),
    }
}

impl Builder<'_> {
    fn node(&mut self) -> Result<Node, SyntaxError> {
        let Some((event, at)) = self.events.get(self.pos) else {
            return Err(self.unexpected_end());
        };
        let at = *at;
        let (line, column) = (at.line, at.column);
        self.pos += 1;
        let first = self.built;
        self.built += 1;
        if self.built > MAX_NODES {
            return Err(too_many_nodes(at));
        }
        let (value, anchor) = match event.clone() {
            Event::Scalar(text, style, anchor, _) => (
                Value::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                },
                anchor,
            ),
            Event::SequenceStart(_, anchor, _) => (self.seq_items()?, anchor),
            Event::MappingStart(_, anchor, _) => (self.map_entries()?, anchor),
            Event::Alias(id) => return self.alias(id, at, first),
            other => {
                return Err(SyntaxError {
                    line,
                    column,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        let node = Node {
            line,
            column,
            value,
        };
        if anchor != 0 {
            self.remember_anchor(anchor, &node, first, at)?;
        }
        Ok(node)
    }

    fn unexpected_end(&self) -> SyntaxError {
        let at = self
            .events
            .last()
            .map(|e| e.1)
            .unwrap_or(Pos { line: 1, column: 1 });
        SyntaxError {
            line: at.line,
            column: at.column,
            message: "unexpected end of the document".into(),
        }
    }

    /// A sequence's items, up to and including its end.
    fn seq_items(&mut self) -> Result<Value, SyntaxError> {
        let mut items = Vec::new();
        while !matches!(self.peek(), Some(Event::SequenceEnd)) {
            items.push(self.node()?);
        }
        self.pos += 1;
        Ok(Value::Seq(items))
    }

    /// A mapping's entries, up to and including its end; keys are scalars, each once.
    fn map_entries(&mut self) -> Result<Value, SyntaxError> {
        let mut entries: Vec<(String, Pos, Node)> = Vec::new();
        while !matches!(self.peek(), Some(Event::MappingEnd)) {
            let key = self.node()?;
            let Value::Scalar { text, .. } = key.value else {
                return Err(SyntaxError {
                    line: key.line,
                    column: key.column,
                    message: "a mapping key must be a plain name, not a list or mapping".into(),
                });
            };
            let key_pos = Pos {
                line: key.line,
                column: key.column,
            };
            let value = self.node()?;
            if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == text) {
                return Err(SyntaxError {
                    line: key_pos.line,
                    column: key_pos.column,
                    message: format!("duplicate key {text:?} (first on line {})", first.line),
                });
            }
            entries.push((text, key_pos, value));
        }
        self.pos += 1;
        Ok(Value::Map(entries))
    }

    /// A copy of an anchored node, at the alias's position.
    fn alias(&mut self, id: usize, at: Pos, first: usize) -> Result<Node, SyntaxError> {
        let Some((target, size)) = self.anchors.get(&id) else {
            return Err(SyntaxError {
                line: at.line,
                column: at.column,
                message: "alias to an unknown anchor".into(),
            });
        };
        // Counted before the copy is made: the copy is what costs the memory.
        self.built = first + size;
        if self.built > MAX_NODES {
            return Err(too_many_nodes(at));
        }
        Ok(Node {
            line: at.line,
            column: at.column,
            ..target.clone()
        })
    }

    fn remember_anchor(
        &mut self,
        anchor: usize,
        node: &Node,
        first: usize,
        at: Pos,
    ) -> Result<(), SyntaxError> {
        // The copy kept for later aliases costs as much again: it counts too, so
        // anchors nested in anchors cannot multiply memory past the bound either.
        let size = self.built - first;
        self.built += size;
        if self.built > MAX_NODES {
            return Err(too_many_nodes(at));
        }
        self.anchors.insert(anchor, (node.clone(), size));
        Ok(())
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
        assert_eq!((m[0].0.as_str(), m[0].1.line), ("a", 1));
        assert_eq!((m[1].0.as_str(), m[1].1.line), ("b", 2));
        let Value::Seq(items) = &m[1].2.value else {
            panic!()
        };
        assert_eq!(items[1].line, 4);
        let Value::Map(m2) = &docs[1].value else {
            panic!()
        };
        assert_eq!(scalar_text(&m2[0].2), "1.30");
        assert_eq!(m2[0].1.line, 6);
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
    fn columns_are_one_based_for_keys_and_values() {
        let docs = parse_documents("a:\n  bb: {c: 1}\n").unwrap();
        let Value::Map(m) = &docs[0].value else {
            panic!()
        };
        let Value::Map(inner) = &m[0].2.value else {
            panic!()
        };
        assert_eq!(inner[0].1, Pos { line: 2, column: 3 });
        assert_eq!(inner[0].2.pos(), Pos { line: 2, column: 7 });
        let Value::Map(flow) = &inner[0].2.value else {
            panic!()
        };
        assert_eq!(flow[0].1, Pos { line: 2, column: 8 });
    }

    /// "Billion laughs": nine levels of nine aliases, under 500 bytes, would be 9^9 nodes.
    fn alias_bomb() -> String {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let refs = vec![format!("*{prev}"); 9].join(",");
            s.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        let bomb = alias_bomb();
        assert!(bomb.len() < 500, "{}", bomb.len());
        let e = parse_documents(&bomb).unwrap_err();
        assert!(e.message.contains("more than 100000 YAML nodes"), "{e:?}");
        // A few aliases to small anchors stay fine.
        assert!(parse_documents("a: &x [1, 2]\nb: [*x, *x, *x]\n").is_ok());
    }

    #[test]
    fn anchors_nested_in_anchors_count_their_copies() {
        // Each anchor keeps a copy of everything under it: 60 nested anchors over 3000
        // items would keep 180 000 nodes without a single alias.
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!("{}k{i}: &a{i}\n", "  ".repeat(i)));
        }
        text.push_str(&format!(
            "{}leaf: [{}]\n",
            "  ".repeat(60),
            vec!["x"; 3000].join(",")
        ));
        let e = parse_documents(&text).unwrap_err();
        assert!(e.message.contains("more than 100000 YAML nodes"), "{e:?}");
        // The same without anchors is fine.
        assert!(parse_documents(&text.replace(": &a", ": #")).is_ok());
    }

    #[test]
    fn deep_nesting_and_huge_files_are_refused() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse_documents(&deep).unwrap_err();
        assert!(e.message.contains("nested more than 64 deep"), "{e:?}");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_documents(&ok).is_ok());
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_INPUT_BYTES));
        let e = parse_documents(&big).unwrap_err();
        assert!(
            e.message
                .contains("a cluster spec may have 1048576 at most"),
            "{e:?}"
        );
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
