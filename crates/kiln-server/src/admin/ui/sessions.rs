//! The web page's sessions: a random id in the browser's cookie, the hash of the token it was
//! opened with on the server, in memory (a restart means logging in again). Bounded: the
//! oldest session gives way when the table is full, and each ends after [`LIFETIME`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::super::auth::hash;

/// How long a session lasts from login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (each needed a live token to open).
pub const MAX_SESSIONS: usize = 256;

#[derive(Debug)]
struct Session {
    token_hash: String,
    opened_ms: u64,
}

/// Open sessions, keyed by the hash of their id (a lookup's timing says nothing of an id).
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for the token whose hash is given; returns the cookie's value.
    pub fn open(&self, token_hash: String, now_ms: u64) -> String {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).expect("the OS random source");
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| !expired(s, now_ms));
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.opened_ms)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            hash(&id),
            Session {
                token_hash,
                opened_ms: now_ms,
            },
        );
        id
    }

    /// The hash of the token behind a live session.
    pub fn token_hash(&self, id: &str, now_ms: u64) -> Option<String> {
        let key = hash(id);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get(&key) {
            Some(s) if expired(s, now_ms) => {
                open.remove(&key);
                None
            }
            Some(s) => Some(s.token_hash.clone()),
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&hash(id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

fn expired(s: &Session, now_ms: u64) -> bool {
    now_ms.saturating_sub(s.opened_ms) >= LIFETIME.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3600 * 1000;

    #[test]
    fn a_session_leads_to_its_token_until_closed() {
        let s = Sessions::default();
        let a = s.open("hash-a".into(), 1);
        let b = s.open("hash-b".into(), 1);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.token_hash(&a, 2).as_deref(), Some("hash-a"));
        assert_eq!(s.token_hash(&b, 2).as_deref(), Some("hash-b"));
        assert_eq!(s.token_hash("hash-a", 2), None, "only the id opens it");
        s.close(&a);
        assert_eq!(s.token_hash(&a, 3), None);
        assert_eq!(s.token_hash(&b, 3).as_deref(), Some("hash-b"));
    }

    #[test]
    fn a_session_ends_after_its_lifetime() {
        let s = Sessions::default();
        let a = s.open("h".into(), 0);
        assert!(s.token_hash(&a, 12 * HOUR_MS - 1).is_some());
        assert_eq!(s.token_hash(&a, 12 * HOUR_MS), None);
        assert_eq!(s.len(), 0, "an ended session is dropped");
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_gives_way() {
        let s = Sessions::default();
        let first = s.open("first".into(), 0);
        let mut last = String::new();
        for i in 0..MAX_SESSIONS as u64 {
            last = s.open(format!("h{i}"), 1 + i);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.token_hash(&first, 1000), None);
        assert!(s.token_hash(&last, 1000).is_some());
    }
}
