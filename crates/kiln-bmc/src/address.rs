//! hardware.csv's `bmc_ip`: a plain host (probed), or `scheme://host[:port]`, and for Redfish
//! optionally the system's path (`redfish+https://bmc/redfish/v1/Systems/Node1`).

use crate::BmcError;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ipmi,
    Redfish {
        https: bool,
    },
    /// No scheme given: try the Redfish service root over HTTPS, then IPMI.
    Probe,
}

/// A parsed BMC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BmcAddress {
    pub protocol: Protocol,
    /// An IP address or a host name (IPv6 without brackets).
    pub host: String,
    /// None: the protocol's default (623 for IPMI, 443/80 for Redfish).
    pub port: Option<u16>,
    /// Redfish only: the path after the host (`/redfish/v1/Systems/Node1`), choosing one system
    /// among several behind the BMC.
    pub path: Option<String>,
}

pub const IPMI_PORT: u16 = 623;

impl BmcAddress {
    pub fn parse(text: &str) -> Result<Self, BmcError> {
        let bad = |detail: String| BmcError::BadAddress {
            address: text.to_string(),
            detail,
        };
        let (protocol, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let protocol = match scheme.to_ascii_lowercase().as_str() {
                    "ipmi" | "lanplus" => Protocol::Ipmi,
                    "redfish" | "redfish+https" | "https" => Protocol::Redfish { https: true },
                    "redfish+http" | "http" => Protocol::Redfish { https: false },
                    other => return Err(bad(format!("unknown scheme {other:?}"))),
                };
                (protocol, rest)
            }
            None => (Protocol::Probe, text),
        };
        let rest = rest.trim_end_matches('/');
        let (rest, path) = match rest.find('/') {
            Some(i) if matches!(protocol, Protocol::Redfish { .. }) => {
                (&rest[..i], Some(rest[i..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(p) = &path
            && (p.contains(['?', '#', ' ', '@']) || p.contains("//"))
        {
            return Err(bad(format!("{p:?} is not a Redfish resource path")));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '['".into()))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad(format!("unexpected {after:?} after the address"))),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', ' ', '@', '?', '#']) {
            return Err(bad(
                "expected host, host:port or scheme://host[:port][/redfish/v1/Systems/ID]".into(),
            ));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad(format!("{p:?} is not a port number"))),
                Ok(n) => Some(n),
            },
        };
        Ok(BmcAddress {
            protocol,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host:port` for a socket, with the protocol's default port.
    pub fn socket_addr_text(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    /// The Redfish base URL (`https://host[:port]`), for `Redfish` and `Probe` addresses.
    pub fn redfish_base_url(&self) -> String {
        let https = !matches!(self.protocol, Protocol::Redfish { https: false });
        let scheme = if https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        }
    }
}

impl fmt::Display for BmcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Ipmi => write!(f, "ipmi://{}", self.socket_addr_text(IPMI_PORT)),
            Protocol::Redfish { .. } => f.write_str(&self.redfish_base_url()),
            Protocol::Probe => match self.port {
                Some(_) => f.write_str(&self.socket_addr_text(0)),
                None => f.write_str(&self.host),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_ports() {
        let a = BmcAddress::parse("ipmi://10.0.0.5:623").unwrap();
        assert_eq!(a.protocol, Protocol::Ipmi);
        assert_eq!(a.socket_addr_text(IPMI_PORT), "10.0.0.5:623");
        let r = BmcAddress::parse("redfish+http://127.0.0.1:8000").unwrap();
        assert_eq!(r.protocol, Protocol::Redfish { https: false });
        assert_eq!(r.redfish_base_url(), "http://127.0.0.1:8000");
        let s = BmcAddress::parse("redfish+https://10.0.0.5").unwrap();
        assert_eq!(s.redfish_base_url(), "https://10.0.0.5");
        let p = BmcAddress::parse("10.0.0.7").unwrap();
        assert_eq!(p.protocol, Protocol::Probe);
        assert_eq!(p.port, None);
        let v6 = BmcAddress::parse("ipmi://[fd00::5]:6230").unwrap();
        assert_eq!(v6.host, "fd00::5");
        assert_eq!(v6.socket_addr_text(IPMI_PORT), "[fd00::5]:6230");
        assert_eq!(BmcAddress::parse("fd00::5").unwrap().host, "fd00::5");
        assert_eq!(s.path, None);
    }

    #[test]
    fn a_redfish_path_names_the_system() {
        let a = BmcAddress::parse("redfish+https://bmc-3:8443/redfish/v1/Systems/Node1/").unwrap();
        assert_eq!(a.host, "bmc-3");
        assert_eq!(a.port, Some(8443));
        assert_eq!(a.path.as_deref(), Some("/redfish/v1/Systems/Node1"));
        assert_eq!(a.redfish_base_url(), "https://bmc-3:8443");
        let v6 = BmcAddress::parse("https://[fd00::5]/redfish/v1/Systems/1").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.path.as_deref()),
            ("fd00::5", Some("/redfish/v1/Systems/1"))
        );
        // Only Redfish addresses carry a path.
        for bad in [
            "ipmi://10.0.0.5/x",
            "10.0.0.5/redfish/v1/Systems/1",
            "https://h/a?b=1",
        ] {
            let e = BmcAddress::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in [
            "gopher://x",
            "ipmi://",
            "ipmi://h:0",
            "ipmi://h:99999",
            "a b",
            "user@h",
            "[fd00::1",
        ] {
            let e = BmcAddress::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    /// What enroll accepts (kiln-model's check) must parse here, to the host
    /// and port written; what this parser refuses must not pass enroll.
    #[test]
    fn every_address_enroll_accepts_parses_here() {
        use kiln_model::bmc_address::check_bmc_address;
        for (text, host, port) in [
            ("10.0.0.5", "10.0.0.5", None),
            ("10.0.0.5:623", "10.0.0.5", Some(623)),
            ("fd00::5", "fd00::5", None),
            ("[fd00::5]:6230", "fd00::5", Some(6230)),
            (
                "ipmi://bmc-7.rack2.example:623",
                "bmc-7.rack2.example",
                Some(623),
            ),
            ("IPMI://10.0.0.5", "10.0.0.5", None),
            ("lanplus://10.0.0.5", "10.0.0.5", None),
            (
                "redfish+https://idrac.example:8443/",
                "idrac.example",
                Some(8443),
            ),
            ("redfish+http://127.0.0.1:8000", "127.0.0.1", Some(8000)),
            ("redfish://r640-idrac", "r640-idrac", None),
            ("https://10.0.0.5", "10.0.0.5", None),
            ("http://localhost:8000", "localhost", Some(8000)),
            (
                "redfish+https://bmc-3:8443/redfish/v1/Systems/Node1",
                "bmc-3",
                Some(8443),
            ),
        ] {
            assert_eq!(check_bmc_address(text), Ok(()), "{text}");
            let parsed = BmcAddress::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{text}");
        }
        for text in [
            "gopher://x",
            "ipmi://",
            "ipmi://h:0",
            "a b",
            "user@h",
            "[fd00::1",
            "ipmi://h/redfish/v1/Systems/1",
            "redfish+https://h/a?b=1",
        ] {
            assert!(BmcAddress::parse(text).is_err(), "{text}");
            assert!(check_bmc_address(text).is_err(), "{text}");
        }
    }
}
