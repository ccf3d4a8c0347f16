//! Range/resume bookkeeping and retry backoff, free of I/O.
//!
//! The download keeps one [`Resume`]: how many bytes of the entity arrived (and were hashed),
//! the entity's total length when known, and the validator (strong ETag, else Last-Modified)
//! that `If-Range` sends so a changed file comes back whole (200) instead of spliced (206).

use std::time::Duration;

/// The response facts the resume logic looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    pub status: u16,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What to do with a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read the body; it continues the stream at the current offset (offset 0 for the first request).
    Continue,
    /// The entity changed (200 to a ranged request, or 416): carry on only by starting over.
    Changed(String),
    /// A transient failure (408, 429, 5xx): try again after a backoff.
    Retry(String),
    /// A failure that will not heal by retrying (404, 403, a wrong Content-Range…).
    Fatal(String),
}

/// Resume state of one download.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Bytes of the entity received so far (the next request starts here).
    pub offset: u64,
    /// Length of the whole entity, when the server told.
    pub total: Option<u64>,
    /// `If-Range` value: the strong ETag, else Last-Modified, of the first response.
    pub validator: Option<String>,
}

impl Resume {
    /// Headers for the next request: none for the first, `Range` (+ `If-Range`) afterwards.
    pub fn request_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if self.offset > 0 {
            headers.push(("Range", format!("bytes={}-", self.offset)));
            if let Some(v) = &self.validator {
                headers.push(("If-Range", v.clone()));
            }
        }
        headers
    }

    /// Whether every byte of the entity has arrived (only known when the total is).
    pub fn complete(&self) -> bool {
        self.total.is_some_and(|t| self.offset >= t)
    }

    /// Records that `n` more bytes arrived.
    pub fn advance(&mut self, n: u64) {
        self.offset += n;
    }

    /// Judges a response to the request built by [`Resume::request_headers`], and on
    /// [`Verdict::Continue`] records the entity's total and validator.
    pub fn accept(&mut self, meta: &ResponseMeta) -> Verdict {
        match meta.status {
            200 if self.offset == 0 => {
                self.total = meta.content_length;
                self.validator = validator(meta);
                Verdict::Continue
            }
            200 => Verdict::Changed(format!(
                "the server sent the whole file (200) instead of the rest from byte {} (206)",
                self.offset
            )),
            206 if self.offset == 0 => {
                Verdict::Fatal("unexpected 206 Partial Content to a request without Range".into())
            }
            206 => self.accept_partial(meta),
            416 if self.offset > 0 => Verdict::Changed(format!(
                "the server cannot resume at byte {} (416 Range Not Satisfiable)",
                self.offset
            )),
            408 | 429 | 500..=599 => Verdict::Retry(format!("HTTP {}", status_text(meta.status))),
            s => Verdict::Fatal(format!("HTTP {}", status_text(s))),
        }
    }

    fn accept_partial(&mut self, meta: &ResponseMeta) -> Verdict {
        let Some(range) = meta.content_range.as_deref() else {
            return Verdict::Fatal("206 Partial Content without Content-Range".into());
        };
        let Some((start, _end, total)) = parse_content_range(range) else {
            return Verdict::Fatal(format!("unparsable Content-Range {range:?}"));
        };
        if start != self.offset {
            return Verdict::Fatal(format!(
                "asked to resume at byte {} but the server sent from byte {start}",
                self.offset
            ));
        }
        if let Some((ours, theirs)) = self.total.zip(total).filter(|(a, b)| a != b) {
            return Verdict::Changed(format!(
                "the file is now {theirs} bytes long, it was {ours} bytes"
            ));
        }
        let etags = strong_etag(self.validator.as_deref()).zip(meta.etag.as_deref());
        if let Some((ours, theirs)) = etags.filter(|(a, b)| a != b) {
            return Verdict::Changed(format!("the ETag changed from {ours} to {theirs}"));
        }
        if self.total.is_none() {
            self.total = total;
        }
        // A shorter range than asked for is fine: the rest comes with the next resume.
        Verdict::Continue
    }
}

fn strong_etag(v: Option<&str>) -> Option<&str> {
    v.filter(|v| v.starts_with('"'))
}

/// The `If-Range` validator: a strong ETag (a weak one is not allowed there), else Last-Modified.
fn validator(meta: &ResponseMeta) -> Option<String> {
    match &meta.etag {
        Some(etag) if etag.starts_with('"') => Some(etag.clone()),
        _ => meta.last_modified.clone(),
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into (start, end, total).
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, Some(end), total))
}

fn status_text(status: u16) -> String {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if reason.is_empty() {
        status.to_string()
    } else {
        format!("{status} {reason}")
    }
}

/// Retry timing: exponential backoff from `initial` doubling up to `max`, giving up once no
/// byte has arrived for `give_up_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay after a failure (default 0.5 s).
    pub initial: Duration,
    /// Longest delay between attempts (default 10 s).
    pub max: Duration,
    /// Give up when no byte has arrived for this long, counting from the start or the
    /// last byte received (default 10 min).
    pub give_up_after: Duration,
    /// Connection (TCP connect) timeout (default 10 s).
    pub connect_timeout: Duration,
    /// A read that waits longer than this counts as a dropped connection (default 30 s).
    pub read_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            give_up_after: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The backoff sequence of one download; [`Backoff::reset`] when bytes flow again.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Backoff {
        Backoff {
            policy,
            next: policy.initial,
        }
    }

    /// The delay before the next attempt, given how long the download has gone without a
    /// byte; `None` means give up. The last delay is cut to end at the deadline, so one
    /// final attempt happens right at it.
    pub fn next_delay(&mut self, without_progress: Duration) -> Option<Duration> {
        let left = self.policy.give_up_after.checked_sub(without_progress)?;
        if left.is_zero() {
            return None;
        }
        let delay = self.next.min(left);
        self.next = (self.next * 2).min(self.policy.max);
        Some(delay)
    }

    pub fn reset(&mut self) {
        self.next = self.policy.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(len: u64, etag: &str) -> ResponseMeta {
        ResponseMeta {
            status: 200,
            content_length: Some(len),
            etag: Some(etag.into()),
            ..Default::default()
        }
    }

    fn partial(range: &str, etag: &str) -> ResponseMeta {
        ResponseMeta {
            status: 206,
            content_range: Some(range.into()),
            etag: Some(etag.into()),
            ..Default::default()
        }
    }

    #[test]
    fn first_request_has_no_range() {
        assert!(Resume::default().request_headers().is_empty());
    }

    #[test]
    fn resume_sends_range_and_if_range() {
        let mut r = Resume::default();
        assert_eq!(r.accept(&ok(1000, "\"abc\"")), Verdict::Continue);
        assert_eq!(r.total, Some(1000));
        r.advance(400);
        assert_eq!(
            r.request_headers(),
            vec![
                ("Range", "bytes=400-".to_string()),
                ("If-Range", "\"abc\"".to_string())
            ]
        );
        assert_eq!(
            r.accept(&partial("bytes 400-999/1000", "\"abc\"")),
            Verdict::Continue
        );
        r.advance(600);
        assert!(r.complete());
    }

    #[test]
    fn weak_etag_falls_back_to_last_modified() {
        let mut r = Resume::default();
        let meta = ResponseMeta {
            etag: Some("W/\"abc\"".into()),
            last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".into()),
            ..ok(10, "")
        };
        r.accept(&meta);
        assert_eq!(
            r.validator.as_deref(),
            Some("Tue, 01 Dec 2026 10:00:00 GMT")
        );
        let mut r = Resume::default();
        r.accept(&ResponseMeta {
            etag: None,
            ..ok(10, "")
        });
        assert_eq!(r.validator, None);
        r.advance(5);
        assert_eq!(r.request_headers(), vec![("Range", "bytes=5-".to_string())]);
    }

    #[test]
    fn whole_file_on_resume_means_changed() {
        let mut r = Resume::default();
        r.accept(&ok(1000, "\"a\""));
        r.advance(10);
        assert!(matches!(r.accept(&ok(1000, "\"b\"")), Verdict::Changed(_)));
        let meta = ResponseMeta {
            status: 416,
            ..Default::default()
        };
        assert!(matches!(r.accept(&meta), Verdict::Changed(_)));
    }

    #[test]
    fn partial_content_is_checked() {
        let mut r = Resume::default();
        r.accept(&ok(1000, "\"a\""));
        r.advance(10);
        assert!(matches!(
            r.accept(&partial("bytes 0-999/1000", "\"a\"")),
            Verdict::Fatal(_)
        ));
        assert!(matches!(
            r.accept(&partial("bytes 10-1999/2000", "\"a\"")),
            Verdict::Changed(_)
        ));
        assert!(matches!(
            r.accept(&partial("bytes 10-999/1000", "\"b\"")),
            Verdict::Changed(_)
        ));
        assert!(matches!(
            r.accept(&partial("garbage", "\"a\"")),
            Verdict::Fatal(_)
        ));
        let meta = ResponseMeta {
            content_range: None,
            ..partial("", "\"a\"")
        };
        assert!(matches!(r.accept(&meta), Verdict::Fatal(_)));
        assert_eq!(
            r.accept(&partial("bytes 10-999/1000", "\"a\"")),
            Verdict::Continue
        );
        // Unknown total (chunked first response) learns it from Content-Range.
        let mut r = Resume::default();
        r.accept(&ResponseMeta {
            content_length: None,
            ..ok(0, "\"a\"")
        });
        r.advance(10);
        assert_eq!(
            r.accept(&partial("bytes 10-99/100", "\"a\"")),
            Verdict::Continue
        );
        assert_eq!(r.total, Some(100));
        let mut fresh = Resume::default();
        assert!(matches!(
            fresh.accept(&partial("bytes 0-9/10", "\"a\"")),
            Verdict::Fatal(_)
        ));
    }

    #[test]
    fn status_classes() {
        let mut r = Resume::default();
        let with = |status| ResponseMeta {
            status,
            ..Default::default()
        };
        assert_eq!(
            r.accept(&with(404)),
            Verdict::Fatal("HTTP 404 Not Found".into())
        );
        assert!(matches!(r.accept(&with(403)), Verdict::Fatal(_)));
        assert_eq!(
            r.accept(&with(503)),
            Verdict::Retry("HTTP 503 Service Unavailable".into())
        );
        assert!(matches!(r.accept(&with(429)), Verdict::Retry(_)));
        assert!(matches!(r.accept(&with(416)), Verdict::Fatal(_)));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 5-9/10"),
            Some((5, Some(9), Some(10)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, Some(9), None)));
        assert_eq!(parse_content_range("bytes 5-9/9"), None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 5-9/10"), None);
    }

    #[test]
    fn backoff_doubles_caps_and_gives_up() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(policy);
        let delays: Vec<_> = (0..7)
            .map(|_| b.next_delay(Duration::ZERO).unwrap())
            .collect();
        let ms: Vec<_> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        b.reset();
        assert_eq!(
            b.next_delay(Duration::ZERO),
            Some(Duration::from_millis(500))
        );
        // The last delay ends at the deadline; past it, give up.
        assert_eq!(
            b.next_delay(Duration::from_millis(59_800)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(b.next_delay(Duration::from_secs(60)), None);
        assert_eq!(b.next_delay(Duration::from_secs(61)), None);
    }
}
