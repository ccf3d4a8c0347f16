//! Ethernet MAC addresses, always printed lower-case with colons.
//!
//! Parsing follows Go's `net.ParseMAC`, which EKS Anywhere uses to validate
//! hardware.csv: `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` (two hex digits per
//! octet, one separator throughout) and `aabb.ccdd.eeff` (four per group), any
//! case. Go also accepts 8-octet (EUI-64) and 20-octet (IP over InfiniBand)
//! addresses in the same spellings; those are recognised here only to say why
//! they are refused: DHCP matches a 6-octet Ethernet address.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMacError {
    #[error(
        "{0:?} is not a MAC address (expected six hex octets like aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabb.ccdd.eeff)"
    )]
    Malformed(String),
    #[error(
        "{text:?} is a {octets}-octet hardware address; Kiln needs a 6-octet Ethernet MAC (the one the machine netboots from), like aa:bb:cc:dd:ee:ff"
    )]
    NotEthernet { text: String, octets: usize },
}

/// The octets of `s` as Go's `net.ParseMAC` reads them (6, 8 or 20 of them),
/// or None where Go returns an error.
fn parse_go_hardware_addr(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    // Two hex digits, then (unless at the end) exactly `sep`.
    let octet_at = |at: usize, sep: Option<u8>| -> Option<u8> {
        let digits = b.get(at..at + 2)?;
        if let Some(&next) = b.get(at + 2)
            && Some(next) != sep
        {
            return None;
        }
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(text, 16).ok()
    };
    let plausible = |n: usize| matches!(n, 6 | 8 | 20);
    if b.len() < 14 {
        return None;
    }
    if b[2] == b':' || b[2] == b'-' {
        if !(b.len() + 1).is_multiple_of(3) || !plausible((b.len() + 1) / 3) {
            return None;
        }
        (0..(b.len() + 1) / 3)
            .map(|i| octet_at(i * 3, Some(b[2])))
            .collect()
    } else if b[4] == b'.' {
        if !(b.len() + 1).is_multiple_of(5) || !plausible(2 * (b.len() + 1) / 5) {
            return None;
        }
        let mut octets = Vec::new();
        for group in 0..(b.len() + 1) / 5 {
            let at = group * 5;
            // The first pair of a group is followed by the second, never a separator.
            octets.push(octet_at(at, Some(b[at + 2]))?);
            octets.push(octet_at(at + 2, Some(b'.'))?);
        }
        Some(octets)
    } else {
        None
    }
}

impl MacAddr {
    /// Takes the first six bytes of a DHCP `chaddr`, if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let octets: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(octets))
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts what Go's `net.ParseMAC` accepts for six octets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let octets = parse_go_hardware_addr(s).ok_or_else(|| ParseMacError::Malformed(s.into()))?;
        match <[u8; 6]>::try_from(octets.as_slice()) {
            Ok(six) => Ok(MacAddr(six)),
            Err(_) => Err(ParseMacError::NotEthernet {
                text: s.into(),
                octets: octets.len(),
            }),
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_prints_lowercase() {
        let m: MacAddr = "AA-BB-cc-0d-EE-ff".parse().unwrap();
        assert_eq!(m.to_string(), "aa:bb:cc:0d:ee:ff");
        assert_eq!("aa:bb:cc:0d:ee:ff".parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn every_spelling_go_accepts_for_six_octets() {
        let want = "aa:bb:cc:0d:ee:ff";
        for text in [
            "aa:bb:cc:0d:ee:ff",
            "AA:BB:CC:0D:EE:FF",
            "aa-bb-cc-0d-ee-ff",
            "Aa-bB-cc-0D-ee-FF",
            "aabb.cc0d.eeff",
            "AABB.CC0D.EEFF",
        ] {
            let mac: MacAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(mac.to_string(), want, "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "a:bb:cc:dd:ee:ff0",
            // Go wants two digits per octet and one separator throughout.
            "a:b:c:d:e:f",
            "aa:bb-cc:dd:ee:ff",
            "aa-bb-cc-dd-ee:ff",
            "aabbccddeeff",
            "aa.bb.cc.dd.ee.ff",
            "aabb:ccdd:eeff",
            "aabb.ccdd-eeff",
            "aab.bccd.deeff",
            " aa:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff ",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(ParseMacError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_the_longer_addresses_go_accepts_and_says_why() {
        for (text, octets) in [
            ("00:00:5e:00:53:01:00:01", 8),
            ("00-00-5E-00-53-01-00-01", 8),
            ("0000.5e00.5301.0001", 8),
            (
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
                20,
            ),
            ("0000.0000.fe80.0000.0000.0000.0200.5e10.0000.0001", 20),
        ] {
            let err = text.parse::<MacAddr>().unwrap_err();
            assert_eq!(
                err,
                ParseMacError::NotEthernet {
                    text: text.into(),
                    octets
                }
            );
            assert!(err.to_string().contains("6-octet"), "{err}");
        }
    }
}
