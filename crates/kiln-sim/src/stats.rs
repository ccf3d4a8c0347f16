//! Latency samples the rack collects, and their percentiles.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// What a sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// DHCPDISCOVER → OFFER.
    DhcpOffer,
    /// DHCPREQUEST → ACK.
    DhcpAck,
    /// The firmware's TFTP fetch of iPXE (`kiln-rack --firmware pxe`), the whole file.
    TftpIpxe,
    /// GET of the iPXE script.
    IpxeScript,
    /// One agent API call (claim, next, report, seed), the whole request.
    AgentCall,
    /// The phone-home POST.
    PhoneHome,
    /// The boot storm (`kiln-rack --storm`): every machine's DISCOVER → OFFER and
    /// REQUEST → ACK at once.
    StormOffer,
    StormAck,
}

#[derive(Debug, Default)]
pub struct Samples {
    by: Mutex<BTreeMap<Measure, Vec<Duration>>>,
}

/// Count and percentiles of one measure, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn add(&self, m: Measure, d: Duration) {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(m)
            .or_default()
            .push(d);
    }

    pub fn summary(&self) -> BTreeMap<Measure, Summary> {
        let by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        by.iter().map(|(m, v)| (*m, summarize(v))).collect()
    }
}

/// Nearest-rank percentiles.
pub fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| -> f64 {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[i.clamp(1, ms.len()) - 1]
    };
    Summary {
        count: ms.len(),
        p50_ms: rank(50.0),
        p99_ms: rank(99.0),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = summarize(&v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        let one = summarize(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(summarize(&[]).count, 0);
    }
}
