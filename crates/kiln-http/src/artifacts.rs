//! Files under a root: HEAD, single byte ranges, ETag and conditional requests,
//! streamed from disk in large chunks.

use kiln_model::event::{EventData, HttpRoot};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_model::Event;
use kiln_root::{PathError, open_under};

use crate::AppState;
use crate::fast_path::{FileRange, SendfileAllowed};
use crate::file_body::file_body;

/// The served directories, and the event kind a fetch from each records.
#[derive(Clone, Copy)]
enum Served {
    Artifacts,
    Images,
    Boot,
}

impl Served {
    fn root(self, state: &AppState) -> &FsPath {
        match self {
            Served::Artifacts => &state.config.artifacts_dir,
            Served::Images => &state.config.images_dir,
            Served::Boot => &state.config.boot_dir,
        }
    }

    /// The root as `kiln_http_file_bytes_total` labels it.
    fn label(self) -> &'static str {
        match self {
            Served::Artifacts => "artifacts",
            Served::Images => "images",
            Served::Boot => "boot",
        }
    }

    fn root_name(self) -> HttpRoot {
        match self {
            Served::Artifacts => HttpRoot::Artifacts,
            Served::Images => HttpRoot::Images,
            Served::Boot => HttpRoot::Boot,
        }
    }
}

/// What every file route takes from the request.
pub(crate) struct FileRequest {
    state: AppState,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    /// The connection came by the sendfile path (see `fast_path`).
    sendfile: bool,
    path: String,
}

impl FromRequestParts<AppState> for FileRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(path) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(FileRequest {
            state: state.clone(),
            peer,
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            sendfile: parts.extensions.get::<SendfileAllowed>().is_some(),
            path,
        })
    }
}

/// Serves a file of one of the roots and records the fetch (with its range,
/// so resumed downloads show) as an event of the machine at that address.
async fn serve_and_record(served: Served, request: FileRequest) -> Response {
    let FileRequest {
        state,
        peer,
        method,
        headers,
        sendfile,
        path,
    } = request;
    let root = (served.root(&state), served.label());
    let response = serve_file(root, &path, &method, &headers, sendfile).await;
    if method == Method::GET {
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let data = EventData::HttpFile {
            root: served.root_name(),
            path,
            status: response.status().as_u16(),
            range,
        };
        state.events.emit(Event::of(data).with_ip(peer.ip()));
    }
    response
}

pub(crate) async fn artifact(request: FileRequest) -> Response {
    serve_and_record(Served::Artifacts, request).await
}

pub(crate) async fn image_file(request: FileRequest) -> Response {
    serve_and_record(Served::Images, request).await
}

pub(crate) async fn boot_file(request: FileRequest) -> Response {
    serve_and_record(Served::Boot, request).await
}

fn plain(status: StatusCode, msg: &str) -> Response {
    (status, format!("{msg}\n")).into_response()
}

/// One `bytes=` range against a file of `len` bytes: `Ok(None)` means "serve it
/// whole" (no or unsupported range), `Err` means unsatisfiable.
pub(crate) fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // Multiple ranges: a full response is allowed (RFC 9110 §14.2).
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// What a file's metadata says about it, as far as responses care.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileMeta {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// The answer to a file request, decided without touching the file's bytes.
#[derive(Debug)]
pub(crate) struct Plan {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `(start, count)` of the file to send as the body; `None`: no body (HEAD, 304, 416).
    pub body: Option<(u64, u64)>,
}

/// HEAD, a single byte range, ETag, If-None-Match and If-Range, from the file's
/// metadata and the request alone (pure: both the hyper and the sendfile paths use it).
pub(crate) fn plan_response(meta: FileMeta, method: &Method, headers: &HeaderMap) -> Plan {
    let len = meta.len;
    let mtime_ns = meta
        .modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{len:x}-{mtime_ns:x}\"");

    let mut common = HeaderMap::new();
    common.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex etag"),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(m) = meta.modified {
        common.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(m)).expect("date"),
        );
    }
    let no_body = |status, headers| Plan {
        status,
        headers,
        body: None,
    };

    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(inm) = header_str(header::IF_NONE_MATCH)
        && inm.split(',').any(|t| t.trim() == etag || t.trim() == "*")
    {
        return no_body(StatusCode::NOT_MODIFIED, common);
    }
    // If-Range with a stale validator: send the whole (new) file.
    let range_allowed = header_str(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = match header_str(header::RANGE).filter(|_| range_allowed) {
        None => None,
        Some(v) => match parse_range(v, len) {
            Ok(r) => r,
            Err(()) => {
                common.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("range"),
                );
                return no_body(StatusCode::RANGE_NOT_SATISFIABLE, common);
            }
        },
    };
    let (status, start, count) = match range {
        Some((s, e)) => {
            common.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{e}/{len}")).expect("range"),
            );
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        None => (StatusCode::OK, 0, len),
    };
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD {
        return no_body(status, common);
    }
    Plan {
        status,
        headers: common,
        body: Some((start, count)),
    }
}

async fn serve_file(
    (root, root_name): (&FsPath, &'static str),
    requested: &str,
    method: &Method,
    headers: &HeaderMap,
    sendfile: bool,
) -> Response {
    // The served-root rules shared with TFTP: no traversal, and symlinks out
    // of the root only when the operator owns them.
    let (root, name) = (root.to_path_buf(), requested.to_string());
    let opened = tokio::task::spawn_blocking(move || {
        let root = std::fs::canonicalize(&root).map_err(PathError::Io)?;
        open_under(&root, &name)
    })
    .await;
    let opened = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(PathError::NotFound | PathError::NotAFile)) => {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Ok(Err(e)) if e.is_refusal() => return plain(StatusCode::FORBIDDEN, "path refused"),
        _ => return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot open the file"),
    };
    let meta = match opened.file.metadata() {
        Ok(m) => FileMeta {
            len: m.len(),
            modified: m.modified().ok(),
        },
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let plan = plan_response(meta, method, headers);
    match plan.body {
        None => (plan.status, plan.headers).into_response(),
        // The connection came through the sendfile path: it sends the bytes itself.
        Some((start, count)) if sendfile => {
            let mut response = (plan.status, plan.headers).into_response();
            response.extensions_mut().insert(FileRange {
                file: Arc::new(opened.file),
                start,
                count,
                root: root_name,
            });
            response
        }
        Some((start, count)) => (
            plan.status,
            plan.headers,
            file_body(opened.file, start, count, root_name),
        )
            .into_response(),
    }
}
