//! Where each resource lives: the server registers these paths, the CLI builds them.

/// Every admin API path starts here.
pub const PREFIX: &str = "/api/v1";
/// The OpenAPI document.
pub const OPENAPI: &str = "/api/v1/openapi.json";

/// A path segment with the characters that would change the path's meaning escaped.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `/api/v1/<collection>` or `/api/v1/<collection>/<item>[/<rest>]`.
pub fn path(collection: &str, item: Option<&str>, rest: &str) -> String {
    match item {
        None => format!("{PREFIX}/{collection}"),
        Some(i) => format!("{PREFIX}/{collection}/{}{rest}", segment(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_escaped_in_paths() {
        assert_eq!(path("hardware", None, ""), "/api/v1/hardware");
        assert_eq!(
            path("hardware", Some("node 1/../x"), "/netboot"),
            "/api/v1/hardware/node%201%2F..%2Fx/netboot"
        );
    }
}
