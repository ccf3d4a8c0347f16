//! What hardware.csv's `bmc_ip` may hold.
//!
//! EKS Anywhere requires an IP address there (Go's `net.ParseIP`: IPv4 or IPv6).
//! Kiln also takes its own scheme URLs, `ipmi://HOST[:PORT]`,
//! `redfish+https://HOST[:PORT]` and `redfish+http://HOST[:PORT]`, where HOST
//! may be a name, and keeps `IP:PORT` (`[IPv6]:PORT`). A Redfish URL may end in
//! the path of one system behind a multi-system BMC
//! (`redfish+https://bmc/redfish/v1/Systems/Node1`). A bare name (a
//! placeholder such as `BMCIP` left in a template, or `my-bmc`) is refused: it
//! is not what EKS Anywhere accepts, and nothing says which protocol to use.
//!
//! `kiln-bmc` parses the same text when it drives the BMC; its tests check that
//! every address accepted here parses there.

use std::net::{IpAddr, Ipv6Addr};

/// Schemes `kiln-bmc` understands (matched without regard to case).
pub const BMC_SCHEMES: [&str; 7] = [
    "ipmi",
    "lanplus",
    "redfish",
    "redfish+https",
    "https",
    "redfish+http",
    "http",
];

/// What to write instead, appended to every complaint.
const EXPECTED: &str = "expected an IP address (as EKS Anywhere requires) or ipmi://HOST[:PORT], \
                        redfish+https://HOST[:PORT][/redfish/v1/Systems/ID] or redfish+http://…, where HOST may be a name";

/// Checks one `bmc_ip` value (already trimmed, not empty); says what is wrong.
pub fn check_bmc_address(address: &str) -> Result<(), String> {
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => {
            if !BMC_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "unknown scheme {scheme:?} in {address:?}: {EXPECTED}"
                ));
            }
            (Some(scheme), rest)
        }
        None => (None, address),
    };
    let rest = rest.trim_end_matches('/');
    let redfish =
        scheme.is_some_and(|s| !matches!(s.to_ascii_lowercase().as_str(), "ipmi" | "lanplus"));
    let rest = match rest.split_once('/') {
        None => rest,
        // The system's path behind a multi-system BMC.
        Some((host, path)) if redfish && is_resource_path(path) => host,
        Some(_) if redfish => {
            return Err(format!(
                "{address:?}: the path must name a Redfish resource (like /redfish/v1/Systems/Node1): {EXPECTED}"
            ));
        }
        Some(_) => {
            return Err(format!(
                "{address:?} has a path; only a Redfish address may name a system: {EXPECTED}"
            ));
        }
    };
    let (host, port, bracketed) = split_host_port(rest)
        .ok_or_else(|| format!("{address:?} is not a BMC address: {EXPECTED}"))?;
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(n) if n != 0)
    {
        return Err(format!(
            "{p:?} in {address:?} is not a port number (1 to 65535)"
        ));
    }
    let is_ip = if bracketed {
        host.parse::<Ipv6Addr>().is_ok()
    } else {
        host.parse::<IpAddr>().is_ok()
    };
    match scheme {
        _ if is_ip => Ok(()),
        None => Err(format!("{address:?} is not an IP address: {EXPECTED}")),
        Some(_) if !bracketed && is_host_name(host) => Ok(()),
        Some(_) => Err(format!(
            "{host:?} in {address:?} is neither an IP address nor a host name: {EXPECTED}"
        )),
    }
}

/// A path after the host (without its leading '/'): non-empty segments, no query, fragment,
/// space or credentials.
fn is_resource_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| !seg.is_empty())
        && !path.contains(['?', '#', ' ', '@'])
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>, bool)> {
    if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port), true)),
            None if after.is_empty() => Some((host, None, true)),
            None => None,
        };
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (text, None),
    };
    (!host.is_empty()).then_some((host, port, false))
}

/// A DNS name: dot-separated labels of letters, digits and '-' (any case).
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The hardware label that opts one machine's Redfish BMC out of certificate verification,
/// with the value [`BMC_TLS_INSECURE`] (`kiln.dev/bmc-tls=insecure`).
pub const BMC_TLS_LABEL: &str = "kiln.dev/bmc-tls";
pub const BMC_TLS_INSECURE: &str = "insecure";

/// How a BMC's password can be read by someone on the path to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordExposure {
    /// `redfish+http://` (or `http://`): Basic auth in clear, readable by any listener.
    PlainHttp,
    /// Redfish over HTTPS with `kiln.dev/bmc-tls=insecure`: whoever answers in the BMC's
    /// place gets the password.
    UnverifiedTls,
}

impl PasswordExposure {
    /// The enrolment warning for machine `hostname` with BMC `address`.
    pub fn warning(self, hostname: &str, address: &str) -> String {
        match self {
            PasswordExposure::PlainHttp => format!(
                "{hostname}: BMC {address} is reached over plain HTTP: its password travels readable \
                 (use redfish+https://)"
            ),
            PasswordExposure::UnverifiedTls => format!(
                "{hostname}: BMC {address} is reached without certificate verification \
                 ({BMC_TLS_LABEL}={BMC_TLS_INSECURE}): its password travels readable to whoever \
                 answers in the BMC's place"
            ),
        }
    }
}

/// Whether the password of the BMC at `address` (valid per [`check_bmc_address`]) can be
/// read on the network, given the machine's labels. A BMC on the loopback (an emulator on
/// Kiln's own host) is never on the network.
pub fn password_exposure(
    address: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<PasswordExposure> {
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), address),
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    let host = match split_host_port(host_port) {
        Some((host, _, _)) => host,
        None => host_port,
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return None;
    }
    match scheme.as_str() {
        "redfish+http" | "http" => Some(PasswordExposure::PlainHttp),
        // IPMI's password never crosses the wire; the label only touches HTTPS.
        "ipmi" | "lanplus" => None,
        // Redfish over HTTPS, or a bare address (probed: Redfish over HTTPS first).
        _ => (labels.get(BMC_TLS_LABEL).map(String::as_str) == Some(BMC_TLS_INSECURE))
            .then_some(PasswordExposure::UnverifiedTls),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_http_and_unverified_bmcs_expose_their_passwords() {
        let none = labels(&[]);
        let insecure = labels(&[("type", "cp"), (BMC_TLS_LABEL, BMC_TLS_INSECURE)]);
        let cases = [
            (
                "redfish+http://10.0.0.5:8000",
                &none,
                Some(PasswordExposure::PlainHttp),
            ),
            (
                "HTTP://bmc-3.example",
                &none,
                Some(PasswordExposure::PlainHttp),
            ),
            (
                "redfish+http://[fd00::5]:8000/redfish/v1/Systems/1",
                &insecure,
                Some(PasswordExposure::PlainHttp),
            ),
            ("redfish+https://10.0.0.5", &none, None),
            (
                "redfish+https://10.0.0.5",
                &insecure,
                Some(PasswordExposure::UnverifiedTls),
            ),
            (
                "https://bmc.example:8443/redfish/v1/Systems/1",
                &insecure,
                Some(PasswordExposure::UnverifiedTls),
            ),
            // A bare address is probed over HTTPS first.
            ("10.0.0.5", &insecure, Some(PasswordExposure::UnverifiedTls)),
            ("10.0.0.5", &none, None),
            // IPMI's password does not cross the wire; the label does not apply to it.
            ("ipmi://10.0.0.5", &insecure, None),
            ("lanplus://10.0.0.5:623", &none, None),
            // Only the value "insecure" turns verification off.
            (
                "redfish+https://10.0.0.5",
                &labels(&[(BMC_TLS_LABEL, "verify")]),
                None,
            ),
            // Loopback: an emulator on Kiln's own host, never on the network.
            ("redfish+http://127.0.0.1:8000", &none, None),
            ("redfish+http://[::1]:8000", &none, None),
            ("redfish+http://localhost:8000", &none, None),
            ("127.0.0.1:8443", &insecure, None),
        ];
        for (address, labels, want) in cases {
            check_bmc_address(address).unwrap();
            assert_eq!(password_exposure(address, labels), want, "{address}");
        }
    }

    #[test]
    fn the_warning_names_the_machine_and_the_address() {
        assert_eq!(
            PasswordExposure::PlainHttp.warning("n1", "redfish+http://10.0.0.5"),
            "n1: BMC redfish+http://10.0.0.5 is reached over plain HTTP: its password travels \
             readable (use redfish+https://)"
        );
        let w = PasswordExposure::UnverifiedTls.warning("n2", "10.0.0.6");
        assert!(
            w.starts_with("n2: BMC 10.0.0.6 is reached without certificate verification (kiln.dev/bmc-tls=insecure): its password travels readable"),
            "{w}"
        );
    }

    use super::*;

    const ACCEPTED: [&str; 16] = [
        "10.0.0.5",
        "10.0.0.5:623",
        "fd00::5",
        "[fd00::5]",
        "[fd00::5]:6230",
        "ipmi://10.0.0.5",
        "ipmi://10.0.0.5:623",
        "IPMI://bmc-7.rack2.example:623",
        "lanplus://10.0.0.5",
        "ipmi://[fd00::5]:623",
        "redfish+https://bmc.example",
        "redfish+https://bmc.example:8443/",
        "redfish+http://127.0.0.1:8000",
        "redfish://r640-idrac",
        "https://10.0.0.5",
        "http://localhost:8000",
    ];

    #[test]
    fn accepts_ip_addresses_and_scheme_urls() {
        for ok in ACCEPTED {
            assert_eq!(check_bmc_address(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bare_names_placeholders_and_malformed_urls() {
        for (bad, says) in [
            ("BMCIP", "is not an IP address"),
            ("my-bmc", "is not an IP address"),
            ("my-bmc:623", "is not an IP address"),
            ("10.0.0", "is not an IP address"),
            ("010.0.0.5", "is not an IP address"),
            ("gopher://x", "unknown scheme"),
            ("ipmi://", "is not a BMC address"),
            ("ipmi://h:0", "not a port number"),
            ("10.0.0.5:99999", "not a port number"),
            ("ipmi://h/redfish/v1/Systems/1", "has a path"),
            ("redfish+https://h/a?b=1", "must name a Redfish resource"),
            ("ipmi://user@h", "neither an IP address nor a host name"),
            ("ipmi://a b", "neither an IP address nor a host name"),
            (
                "ipmi://[bmc.example]:623",
                "neither an IP address nor a host name",
            ),
            ("[fd00::1", "is not a BMC address"),
        ] {
            let err = check_bmc_address(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
        // The complaint about a bare name says what would be accepted.
        let err = check_bmc_address("BMCIP").unwrap_err();
        assert!(err.contains("ipmi://HOST[:PORT]"), "{err}");
        assert!(err.contains("redfish+https://HOST[:PORT]"), "{err}");
    }
}
