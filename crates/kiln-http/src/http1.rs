//! The little of HTTP/1.x the sendfile path speaks itself, without sockets: recognise a
//! body-less GET/HEAD of a file route in the bytes read so far, and write a response head.
//! Anything it does not recognise goes to hyper untouched.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

/// A request head larger than this is left to hyper (which answers 431 where due).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// What the bytes read so far on a connection hold.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a whole request head yet.
    Partial,
    /// A request the sendfile path serves: its head, the bytes it took, and whether the
    /// client keeps the connection open afterwards.
    Ours {
        request: Box<Request<()>>,
        len: usize,
        keep_alive: bool,
    },
    /// Anything else (another route or method, a body, an upgrade, bad syntax): hyper's.
    NotOurs,
}

/// Parse the request head at the start of `buf`; `ours` says which paths the sendfile
/// path serves.
pub(crate) fn parse(buf: &[u8], ours: impl Fn(&str) -> bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::NotOurs,
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Parsed::NotOurs,
    };
    let Some(uri) = req.path.and_then(|p| p.parse::<Uri>().ok()) else {
        return Parsed::NotOurs;
    };
    if !ours(uri.path()) {
        return Parsed::NotOurs;
    }
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::NotOurs;
        };
        map.append(name, value);
    }
    // A body (or a protocol switch) is hyper's business.
    let has_body = map.contains_key(axum::http::header::TRANSFER_ENCODING)
        || map
            .get_all(axum::http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0");
    if has_body
        || map.contains_key(axum::http::header::UPGRADE)
        || map.contains_key(axum::http::header::EXPECT)
    {
        return Parsed::NotOurs;
    }
    let keep_alive = keeps_alive(version, &map);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Parsed::Ours {
        request: Box::new(request),
        len,
        keep_alive,
    }
}

/// Whether the `Connection` header lists `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when asked `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_10 {
        connection_has(headers, "keep-alive")
    } else {
        !connection_has(headers, "close")
    }
}

/// Statuses that never carry a body (so no Content-Length is made up for them).
pub(crate) fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// The response head: status line in the request's version (as hyper answers HTTP/1.0
/// clients), the handler's headers, `Date`, `Content-Length: body_len` when the handler set
/// none, and `Connection` as decided.
pub(crate) fn encode_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    body_len: Option<u64>,
    keep_alive: bool,
    date: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == axum::http::header::CONNECTION {
            continue; // ours to decide, below
        }
        line(&mut out, name.as_str(), value.as_bytes());
    }
    if !headers.contains_key(axum::http::header::DATE) {
        line(&mut out, "date", date.as_bytes());
    }
    if let Some(n) = body_len
        && !headers.contains_key(axum::http::header::CONTENT_LENGTH)
        && !bodiless(status)
    {
        line(&mut out, "content-length", n.to_string().as_bytes());
    }
    if !keep_alive {
        line(&mut out, "connection", b"close");
    } else if version == Version::HTTP_10 {
        line(&mut out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(p: &str) -> bool {
        p.starts_with("/artifacts/")
    }

    fn ours(buf: &[u8]) -> (Box<Request<()>>, usize, bool) {
        match parse(buf, files) {
            Parsed::Ours {
                request,
                len,
                keep_alive,
            } => (request, len, keep_alive),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn a_file_get_is_ours_with_its_length_and_headers() {
        let raw =
            b"GET /artifacts/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\nGET /next";
        let (req, len, keep) = ours(raw);
        assert_eq!(len, raw.len() - b"GET /next".len());
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/artifacts/vmlinuz");
        assert_eq!(req.headers()["range"], "bytes=0-9");
        assert!(keep);
    }

    #[test]
    fn keep_alive_follows_the_version_rules() {
        assert!(!ours(b"GET /artifacts/a HTTP/1.0\r\n\r\n").2);
        assert!(ours(b"GET /artifacts/a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").2);
        assert!(!ours(b"HEAD /artifacts/a HTTP/1.1\r\nConnection: te, close\r\n\r\n").2);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            parse(b"GET /artifacts/a HTTP/1.1\r\nHo", files),
            Parsed::Partial
        ));
        assert!(matches!(parse(b"", files), Parsed::Partial));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            &b"GET /healthz HTTP/1.1\r\n\r\n"[..],
            b"POST /artifacts/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /artifacts/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /artifacts/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /artifacts/a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /artifacts/a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01 not http at all\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, files), Parsed::NotOurs),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // An explicit empty body is still body-less.
        ours(b"GET /artifacts/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn heads_carry_length_date_and_connection() {
        let mut h = HeaderMap::new();
        h.insert("etag", HeaderValue::from_static("\"1-2\""));
        let head = encode_head(
            Version::HTTP_11,
            StatusCode::NOT_FOUND,
            &h,
            Some(10),
            true,
            "Sun, 22 Nov 2026 04:00:00 GMT",
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 404 Not Found\r\netag: \"1-2\"\r\ndate: Sun, 22 Nov 2026 04:00:00 GMT\r\n\
             content-length: 10\r\n\r\n"
        );
        let head = encode_head(
            Version::HTTP_10,
            StatusCode::NOT_MODIFIED,
            &h,
            Some(0),
            true,
            "d",
        );
        let s = String::from_utf8(head).unwrap();
        assert!(s.starts_with("HTTP/1.0 304 Not Modified\r\n"), "{s}");
        assert!(!s.contains("content-length"), "{s}");
        assert!(s.ends_with("connection: keep-alive\r\n\r\n"), "{s}");
        h.insert("content-length", HeaderValue::from_static("5"));
        let s = String::from_utf8(encode_head(
            Version::HTTP_11,
            StatusCode::OK,
            &h,
            None,
            false,
            "d",
        ))
        .unwrap();
        assert_eq!(s.matches("content-length").count(), 1, "{s}");
        assert!(s.ends_with("connection: close\r\n\r\n"), "{s}");
    }
}
