//! Which machines a server answers when several servers share one state (issue 13): each
//! answers DHCP for its own segment, and for the relayed subnets it is told to serve.
//!
//! The rule for two servers on one segment (an HA pair) is that they answer alike: what a
//! machine is given (address, mask, router, DNS, hostname, lease time, whether to netboot)
//! comes only from its shared hardware record; only the server's own identity differs
//! (option 54, `siaddr`, the host in boot URLs), and every server serves HTTP, TFTP and the
//! agent API for every machine, so either offer works. A REQUEST that selected one server is
//! answered by that server alone (RFC 2131 §4.3.2), so a client is never ACKed by two.

use std::fmt;
use std::net::Ipv4Addr;

use kiln_model::Hardware;

/// An IPv4 subnet, `10.20.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network) & self.mask()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected a subnet like 10.20.0.0/24"))?;
        let network = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0 to 32"))?;
        Ok(Subnet { network, prefix })
    }
}

/// Which enrolled machines this server answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Segments {
    /// Every enrolled machine (one server for everything: the default).
    #[default]
    All,
    /// Machines on this server's own segment (their subnet holds the server's address), and
    /// relayed requests (giaddr set) of machines in `relayed`.
    Own { relayed: Vec<Subnet> },
}

impl Segments {
    /// `all`, or `own` followed by relayed subnets: `own,10.20.0.0/24,10.30.0.0/24`.
    pub fn parse(value: &str) -> Result<Segments, String> {
        let mut parts = value.split(',').map(str::trim);
        match parts.next() {
            Some("all") if value.trim() == "all" => Ok(Segments::All),
            Some("own") => Ok(Segments::Own {
                relayed: parts.map(str::parse).collect::<Result<_, _>>()?,
            }),
            _ => Err(format!(
                "{value:?}: expected `all`, or `own` then relayed subnets (own,10.20.0.0/24)"
            )),
        }
    }

    /// Whether this server (at `server_ip`) answers `hw`'s request relayed through `giaddr`
    /// (unspecified: heard on its own wire); the reason when not.
    pub fn answers(
        &self,
        hw: &Hardware,
        giaddr: Ipv4Addr,
        server_ip: Ipv4Addr,
    ) -> Result<(), String> {
        let Segments::Own { relayed } = self else {
            return Ok(());
        };
        if giaddr.is_unspecified() {
            let own = Subnet {
                network: hw.ip,
                prefix: hw.prefix_len() as u8,
            };
            if own.contains(server_ip) {
                return Ok(());
            }
            return Err(format!("{} ({own}) is not on this server's segment", hw.ip));
        }
        if relayed.iter().any(|s| s.contains(hw.ip)) {
            return Ok(());
        }
        Err(format!(
            "{} (relayed by {giaddr}) is in no subnet this server serves through relays",
            hw.ip
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(ip: [u8; 4]) -> Hardware {
        let csv = format!(
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             m,52:54:00:00:00:01,{},255.255.255.0,,,,/dev/sda\n",
            Ipv4Addr::from(ip)
        );
        kiln_model::csv::parse_hardware_csv("t.csv", &csv)
            .unwrap()
            .remove(0)
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const NONE: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    #[test]
    fn own_segment_and_configured_relays_only() {
        let s = Segments::parse("own, 10.20.0.0/24").unwrap();
        // On this server's wire and in its subnet.
        assert!(s.answers(&hw([10, 1, 0, 11]), NONE, SERVER).is_ok());
        // Heard on the wire, but the machine belongs to another segment.
        let why = s.answers(&hw([10, 2, 0, 11]), NONE, SERVER).unwrap_err();
        assert!(why.contains("not on this server's segment"), "{why}");
        // Relayed from a subnet this server serves, and from one it does not.
        let relay = Ipv4Addr::new(10, 20, 0, 1);
        assert!(s.answers(&hw([10, 20, 0, 11]), relay, SERVER).is_ok());
        let other_relay = Ipv4Addr::new(10, 30, 0, 1);
        let why = s
            .answers(&hw([10, 30, 0, 11]), other_relay, SERVER)
            .unwrap_err();
        assert!(why.contains("relayed by 10.30.0.1"), "{why}");
        // A relayed request for a machine of the own segment is another server's to answer.
        assert!(s.answers(&hw([10, 1, 0, 11]), relay, SERVER).is_err());
    }

    #[test]
    fn all_answers_every_machine() {
        let s = Segments::parse("all").unwrap();
        assert_eq!(s, Segments::All);
        assert!(s.answers(&hw([10, 2, 0, 11]), NONE, SERVER).is_ok());
        assert!(
            s.answers(&hw([10, 2, 0, 11]), Ipv4Addr::new(10, 2, 0, 1), SERVER)
                .is_ok()
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        for (bad, says) in [
            ("some", "expected `all`"),
            ("all,10.0.0.0/8", "expected `all`"),
            ("own,10.0.0.0", "like 10.20.0.0/24"),
            ("own,10.0.0.0/33", "0 to 32"),
            ("own,10.0.x.0/24", "not an IPv4 address"),
        ] {
            let e = Segments::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            Segments::parse("own").unwrap(),
            Segments::Own { relayed: vec![] }
        );
        let s: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(s.contains(Ipv4Addr::new(192, 168, 1, 1)));
    }
}
