//! The agent APIs a netbooted kernel is told about: this server's first, then those of the
//! other live servers sharing its state, each with the fingerprint of the CA it pins.
//!
//! `kiln.api=URL[,URL…] kiln.ca-sha256=HEX[,HEX…]`, paired by position. Each server keeps its
//! own CA (its key never leaves its data dir), so an agent whose server dies moves to the next
//! URL and trusts there only the CA named beside it.

use std::sync::{Arc, RwLock};

/// How many other servers' APIs the kernel line carries (it is bounded: 2,048 bytes on x86).
pub const MAX_PEERS: usize = 3;

/// One server's agent API over TLS and the SHA-256 of its CA (64 lower-case hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub url: String,
    pub ca_sha256: String,
}

impl AgentEndpoint {
    /// `None` unless `url` is `https://…` without spaces or commas and `ca_sha256` is 64 hex
    /// digits: what goes on a kernel command line must split back the same way.
    pub fn new(url: &str, ca_sha256: &str) -> Option<AgentEndpoint> {
        let url = url.trim_end_matches('/');
        let url_ok = url.len() > "https://".len()
            && url.starts_with("https://")
            && !url.contains(|c: char| c == ',' || c.is_whitespace() || c.is_control());
        let pin_ok = ca_sha256.len() == 64 && ca_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (url_ok && pin_ok).then(|| AgentEndpoint {
            url: url.to_string(),
            ca_sha256: ca_sha256.to_ascii_lowercase(),
        })
    }
}

/// This server's endpoint and the peers' as last seen, shared between the refresher (which
/// updates the peers from the servers' heartbeats) and the iPXE scripts (which read them).
#[derive(Debug, Clone)]
pub struct AgentApis {
    own: AgentEndpoint,
    peers: Arc<RwLock<Vec<AgentEndpoint>>>,
}

impl AgentApis {
    pub fn new(own: AgentEndpoint) -> AgentApis {
        AgentApis {
            own,
            peers: Arc::default(),
        }
    }

    pub fn own(&self) -> &AgentEndpoint {
        &self.own
    }

    /// The other live servers' endpoints (this one's and repeats dropped, at most
    /// [`MAX_PEERS`] kept, in the order given).
    pub fn set_peers(&self, peers: impl IntoIterator<Item = AgentEndpoint>) {
        let mut kept: Vec<AgentEndpoint> = Vec::new();
        for p in peers {
            if kept.len() == MAX_PEERS {
                break;
            }
            if p.url != self.own.url && !kept.iter().any(|k| k.url == p.url) {
                kept.push(p);
            }
        }
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = kept;
    }

    /// `kiln.api=… kiln.ca-sha256=…` for the kernel command line.
    pub fn kernel_args(&self) -> String {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let all: Vec<&AgentEndpoint> = std::iter::once(&self.own).chain(peers.iter()).collect();
        let urls: Vec<&str> = all.iter().map(|e| e.url.as_str()).collect();
        let pins: Vec<&str> = all.iter().map(|e| e.ca_sha256.as_str()).collect();
        format!(
            "kiln.api={} kiln.ca-sha256={}",
            urls.join(","),
            pins.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str, pin: char) -> AgentEndpoint {
        AgentEndpoint::new(url, &pin.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn own_first_then_the_peers_paired_by_position() {
        let apis = AgentApis::new(ep("https://10.77.0.1:8443/", 'a'));
        assert_eq!(
            apis.kernel_args(),
            format!(
                "kiln.api=https://10.77.0.1:8443 kiln.ca-sha256={}",
                "a".repeat(64)
            )
        );
        apis.set_peers([
            ep("https://10.77.0.2:8443", 'b'),
            ep("https://10.78.0.1:8443", 'C'),
        ]);
        assert_eq!(
            apis.kernel_args(),
            format!(
                "kiln.api=https://10.77.0.1:8443,https://10.77.0.2:8443,https://10.78.0.1:8443 \
                 kiln.ca-sha256={},{},{}",
                "a".repeat(64),
                "b".repeat(64),
                "c".repeat(64)
            )
        );
        // Clones share the peers: the refresher's update reaches the scripts.
        let seen_by_scripts = apis.clone();
        apis.set_peers([]);
        assert_eq!(seen_by_scripts.kernel_args(), apis.kernel_args());
        assert!(!seen_by_scripts.kernel_args().contains(','));
    }

    #[test]
    fn peers_are_bounded_and_never_repeat_this_server() {
        let apis = AgentApis::new(ep("https://10.77.0.1:8443", 'a'));
        apis.set_peers([
            ep("https://10.77.0.1:8443", 'a'),
            ep("https://10.77.0.2:8443", 'b'),
            ep("https://10.77.0.2:8443", 'b'),
            ep("https://10.77.0.3:8443", 'c'),
            ep("https://10.77.0.4:8443", 'd'),
            ep("https://10.77.0.5:8443", 'e'),
        ]);
        let args = apis.kernel_args();
        assert_eq!(
            args.split(' ').next().unwrap(),
            "kiln.api=https://10.77.0.1:8443,https://10.77.0.2:8443,https://10.77.0.3:8443,https://10.77.0.4:8443"
        );
        assert_eq!(args.matches(',').count(), 2 * MAX_PEERS);
    }

    #[test]
    fn what_would_not_split_back_is_refused() {
        let pin = "a".repeat(64);
        assert!(AgentEndpoint::new("http://10.77.0.1:8443", &pin).is_none());
        assert!(AgentEndpoint::new("https://", &pin).is_none());
        assert!(AgentEndpoint::new("https://a,b:8443", &pin).is_none());
        assert!(AgentEndpoint::new("https://a b:8443", &pin).is_none());
        assert!(AgentEndpoint::new("https://a:8443", "ab").is_none());
        assert!(AgentEndpoint::new("https://a:8443", &"g".repeat(64)).is_none());
    }
}
