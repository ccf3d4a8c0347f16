//! What a host on the untrusted provisioning network may cost the HTTP service: how long a
//! connection may take to ask, sit idle, dribble a body or stall a response, and how many
//! connections one address and all addresses together may hold.

use kiln_model::event::EventData;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kiln_model::{Event, EventSink};
use tokio::time::Instant;
use tracing::warn;

/// Limits of the HTTP listener (`kiln serve --http-*`), given to [`crate::serve_with_limits`].
///
/// Why the defaults: a netbooting machine holds one connection at a time (iPXE fetches its
/// files one by one) and the agent one or two (the image stream and an API call), so 64 per
/// address is far above any real machine, while one hostile address gets at most 1/64 of
/// the 4,096 total. 4,096 idle connections cost a few MiB; `kiln serve` also keeps the total
/// at most half the open-file limit, so TFTP (and the store) always find descriptors: TFTP
/// and DHCP are separate services and keep answering when HTTP is full. A request head is a
/// few hundred bytes, so 10 s (nginx's `client_header_timeout` is 60 s) is slack for any
/// firmware yet ends a slow-loris head quickly; 60 s idle covers the agent's pauses between
/// calls (nginx `keepalive_timeout` 75 s); bodies are at most [`crate::MAX_REQUEST_BODY`], so
/// 60 s for a whole body is 4 KiB/s; a client that takes no byte of its response for 60 s
/// is gone (nginx `send_timeout`). Downloads are never cut while they move.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// A request head must be complete this long after the connection was accepted (the
    /// first request) or after its first byte arrived (later requests).
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body must have arrived whole this long after its head.
    pub body_timeout: Duration,
    /// A response the client takes no byte of for this long is abandoned; one that moves,
    /// however slowly and however large, is not.
    pub send_timeout: Duration,
    /// Open connections in all; over it a new connection is closed at once.
    pub max_connections: usize,
    /// Open connections from one IP address; over it a new one is closed at once.
    pub max_per_source: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_per_source: 64,
        }
    }
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` are open.
    Total,
    /// `max_per_source` are open from the same address.
    PerSource,
}

impl Refused {
    /// The `reason` label of `kiln_http_connections_refused_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerSource => "per_source",
        }
    }
}

/// One warning per reason per this long, however many connections are refused.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts the open connections, in all and per address. The per-address map holds only
/// addresses with an open connection, so it never outgrows `max_connections`.
pub(crate) struct Admission {
    max_total: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
    /// Where refusals are recorded as `http.refused` events (at most one per kind and window).
    events: Option<Arc<dyn EventSink>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
    /// Per [`Refused`] variant: when the last warning went out, refusals since.
    logged: [(Option<Instant>, u64); 2],
}

/// An admitted connection; dropping it frees its place.
#[must_use = "the connection's place is freed when the permit drops"]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    #[cfg(test)]
    pub(crate) fn new(limits: &HttpLimits) -> Arc<Admission> {
        Admission::with_events(limits, None)
    }

    pub(crate) fn with_events(
        limits: &HttpLimits,
        events: Option<Arc<dyn EventSink>>,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: limits.max_connections,
            max_per_source: limits.max_per_source,
            counts: Mutex::default(),
            events,
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent under any panic (each update is one statement).
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or why there is none.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        // ::ffff:a.b.c.d on a dual-stack listener is the IPv4 host a.b.c.d.
        let ip = ip.to_canonical();
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let from_ip = c.per_source.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_source {
            if *from_ip == 0 {
                c.per_source.remove(&ip); // max_per_source 0: leave no empty entry
            }
            return Err(Refused::PerSource);
        }
        *from_ip += 1;
        c.total += 1;
        metrics::gauge!("kiln_http_connections_open").set(c.total as f64);
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    /// Counts a refusal; `Some(n)` when a warning is due now (`n` refusals of this kind
    /// since the last one, this one included).
    pub(crate) fn note_refusal(&self, why: Refused, now: Instant) -> Option<u64> {
        let mut c = self.counts();
        let (last, since) = &mut c.logged[why as usize];
        *since += 1;
        match last {
            Some(t) if now.duration_since(*t) < REFUSAL_LOG_EVERY => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(since))
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.counts().per_source.len()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.total -= 1;
        if let Some(n) = c.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.ip);
            }
        }
        metrics::gauge!("kiln_http_connections_open").set(c.total as f64);
    }
}

/// A connection was refused: count it, and warn when due (rate-limited).
pub(crate) fn refused(admission: &Admission, why: Refused, peer: IpAddr) {
    metrics::counter!("kiln_http_connections_refused_total", "reason" => why.reason()).increment(1);
    if let Some(n) = admission.note_refusal(why, Instant::now()) {
        warn!(
            %peer,
            reason = why.reason(),
            refused_since_last_warning = n,
            "http connection refused: too many open connections"
        );
        if let Some(events) = &admission.events {
            let (cap, limit) = match why {
                Refused::Total => ("total", admission.max_total),
                Refused::PerSource => ("per-source", admission.max_per_source),
            };
            let peer = peer.to_canonical();
            events.emit(
                Event::of(EventData::HttpOverCap {
                    peer,
                    cap: cap.to_string(),
                    limit: limit as u64,
                    refused: n,
                })
                .with_ip(peer),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> HttpLimits {
        HttpLimits {
            max_connections: total,
            max_per_source: per_source,
            ..HttpLimits::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let adm = Admission::new(&limits(100, 2));
        let a1 = adm.admit(A).unwrap();
        let _a2 = adm.admit(A).unwrap();
        assert_eq!(adm.admit(A).err(), Some(Refused::PerSource));
        let _b = adm.admit(B).expect("another address is not affected");
        drop(a1);
        let _a3 = adm.admit(A).expect("a freed place is free again");
        assert_eq!(adm.admit(A).err(), Some(Refused::PerSource));
    }

    #[test]
    fn the_total_cap_holds_across_addresses() {
        let adm = Admission::new(&limits(2, 10));
        let _a = adm.admit(A).unwrap();
        let b = adm.admit(B).unwrap();
        assert_eq!(
            adm.admit("10.0.0.3".parse().unwrap()).err(),
            Some(Refused::Total)
        );
        drop(b);
        assert!(adm.admit("10.0.0.3".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_address_map_keeps_only_addresses_with_open_connections() {
        let adm = Admission::new(&limits(10_000, 1));
        let permits: Vec<_> = (0..1000u32)
            .map(|i| adm.admit(IpAddr::V4(i.into())).unwrap())
            .collect();
        assert_eq!(adm.sources(), 1000);
        for i in 0..1000u32 {
            assert!(adm.admit(IpAddr::V4(i.into())).is_err()); // refusals add no entry
        }
        drop(permits);
        assert_eq!(adm.sources(), 0);
        let zero = Admission::new(&limits(10, 0));
        assert_eq!(zero.admit(A).err(), Some(Refused::PerSource));
        assert_eq!(zero.sources(), 0);
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_host() {
        let adm = Admission::new(&limits(10, 1));
        let _a = adm.admit(A).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(adm.admit(mapped).err(), Some(Refused::PerSource));
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);
    impl EventSink for Recorder {
        fn emit(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_leaves_an_event_naming_its_source() {
        let sink = Arc::new(Recorder::default());
        let adm = Admission::with_events(&limits(10, 1), Some(sink.clone()));
        let _held = adm.admit(A).unwrap();
        for _ in 0..5 {
            let why = adm.admit(A).err().unwrap();
            refused(&adm, why, A);
        }
        let events = sink.0.lock().unwrap();
        assert_eq!(
            events.len(),
            1,
            "one event per window, not one per connection"
        );
        assert_eq!(events[0].kind, kiln_model::EventKind::HttpRefused);
        assert_eq!(events[0].ip, Some(A));
        assert!(
            events[0].detail.contains("per-source cap (1 open)"),
            "{}",
            events[0].detail
        );
    }

    #[test]
    fn refusals_are_logged_once_per_window_with_their_count() {
        let adm = Admission::new(&limits(1, 1));
        let t0 = Instant::now();
        assert_eq!(adm.note_refusal(Refused::Total, t0), Some(1));
        assert_eq!(adm.note_refusal(Refused::Total, t0), None);
        assert_eq!(
            adm.note_refusal(Refused::PerSource, t0),
            Some(1),
            "each reason has its own window"
        );
        assert_eq!(
            adm.note_refusal(Refused::Total, t0 + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            adm.note_refusal(Refused::Total, t0 + REFUSAL_LOG_EVERY),
            Some(3)
        );
    }
}
