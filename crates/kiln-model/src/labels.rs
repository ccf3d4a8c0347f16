//! Kubernetes label syntax: `prefix/name=value`.

/// Checks one label key; returns what is wrong.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !is_dns_subdomain(p))
    {
        return Err(format!("label key prefix {p:?} is not a DNS subdomain"));
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    check_name_part(name).map_err(|why| format!("label key {key:?}: {why}"))
}

/// Checks one label value (may be empty).
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|why| format!("label value {value:?}: {why}"))
}

fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("longer than 63 characters".into());
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !s.chars().all(ok_inner) {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    let first = s.chars().next().unwrap_or('-');
    let last = s.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// RFC 1123 subdomain, as Kubernetes checks hostnames: lower-case labels of
/// letters, digits and '-', joined by '.', 253 characters at most.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(check_key("type").is_ok());
        assert!(check_key("node-role.kubernetes.io/control-plane").is_ok());
        assert!(check_key("-bad").is_err());
        assert!(check_key("Bad.Prefix/x").is_err());
        assert!(check_key("a/").is_err());
        assert!(check_value("").is_ok());
        assert!(check_value("cp").is_ok());
        assert!(check_value("white space").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(is_dns_subdomain("eksa-node01"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("Node1"));
        assert!(!is_dns_subdomain("node_1"));
        assert!(!is_dns_subdomain("-node"));
        assert!(!is_dns_subdomain("a..b"));
    }
}
