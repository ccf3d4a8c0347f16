//! Bearer tokens for the admin API: `kiln_<id>_<secret>`, 256 random bits of secret, kept as
//! SHA-256 in the store. Reads need any live token, changes an `admin` one. Every refusal is
//! logged and recorded as an `api.refused` event naming the source.

use kiln_model::event::EventData;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_api::TokenScope;
use kiln_model::Event;
use kiln_store::{ApiTokenRecord, Store, StoreError};
use sha2::{Digest, Sha256};

use super::AdminState;
use super::failure::Failure;

/// The token made at first start, for the CLI on the server host.
pub const FIRST_TOKEN_FILE: &str = "admin.token";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random source");
    hex(&buf)
}

pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Makes a token, stores its hash, and returns (record, the token).
pub fn create(
    store: &dyn Store,
    name: &str,
    scope: TokenScope,
    now_ms: u64,
) -> Result<(ApiTokenRecord, String), StoreError> {
    let id = random_hex(6);
    let token = format!("kiln_{id}_{}", random_hex(32));
    let record = ApiTokenRecord {
        id,
        name: name.into(),
        scope: scope.as_str().into(),
        created_ms: now_ms,
        revoked_ms: None,
    };
    store.insert_api_token(&record, &hash(&token))?;
    Ok((record, token))
}

/// At first start (no token at all yet) makes an admin token and writes it to
/// `DATA_DIR/admin.token` (0600), for the CLI on this host.
pub fn ensure_first_token(
    store: &dyn Store,
    data_dir: &Path,
    now_ms: u64,
) -> Result<(), crate::ServerError> {
    use crate::error::StartContext;
    if !store.api_tokens()?.is_empty() {
        return Ok(());
    }
    let path = data_dir.join(FIRST_TOKEN_FILE);
    let tmp = data_dir.join(format!("{FIRST_TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let (_, token) = create(store, "first-start", TokenScope::Admin, now_ms)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_start(|| format!("creating {}", tmp.display()))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_start(|| format!("writing {}", path.display()))?;
    tracing::info!(file = %path.display(), "admin API token made");
    Ok(())
}

/// POSTs that change nothing by themselves: checking a template, a preflight, and BMC actions, whose
/// handler asks for an admin token unless the operation only reads (status, info).
const READING_POSTS: &[&str] = &[
    "/api/v1/templates/validate",
    "/api/v1/bmc/actions",
    kiln_api::PREFLIGHT,
];

/// What a request needs: reads (GET, HEAD, and the [`READING_POSTS`]) any token, everything
/// else an admin one.
fn needed(method: &Method, path: &str) -> TokenScope {
    let reads = method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && READING_POSTS.contains(&path));
    if reads {
        TokenScope::ReadOnly
    } else {
        TokenScope::Admin
    }
}

/// Who made a request, for handlers that need more than the method's scope (a GET that
/// returns a credential); the middleware puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: TokenScope,
    pub token_name: String,
    pub peer: SocketAddr,
    /// `METHOD /path`, for the refusal's log line and event.
    pub what: String,
    /// What let the request in, to ask again later (a long-lived stream ends when its token
    /// is revoked or its session ends).
    pub(crate) credential: Credential,
}

/// The credential a request presented: a bearer token (kept hashed) or the web page's
/// session (its id is a secret too: never printed).
#[derive(Clone)]
pub(crate) enum Credential {
    TokenHash(String),
    Session(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::TokenHash(_) => "TokenHash(..)",
            Credential::Session(_) => "Session(..)",
        })
    }
}

/// A refusal: logged, recorded as an `api.refused` event naming the source, and the error.
pub(crate) fn refused(
    state: &AdminState,
    peer: SocketAddr,
    what: &str,
    status: StatusCode,
    code: &str,
    why: String,
) -> Failure {
    tracing::warn!(peer = %peer, "admin API refused {what}: {why}");
    let (method, path) = what.split_once(' ').unwrap_or(("", what));
    state.events.emit(
        Event::of(EventData::ApiRefused {
            method: method.to_string(),
            path: path.to_string(),
            peer: peer.ip(),
            reason: why.clone(),
        })
        .with_ip(peer.ip()),
    );
    Failure::new(status, code, why)
}

/// In a handler: refuses (403, logged like the middleware's refusals) unless the caller's
/// token allows `need`.
pub fn require(
    state: &AdminState,
    caller: &Caller,
    need: TokenScope,
    what_for: &str,
) -> Result<(), Failure> {
    if caller.scope.allows(need) {
        return Ok(());
    }
    Err(refused(
        state,
        caller.peer,
        &caller.what,
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token {:?} is {}; {what_for} needs an {} token",
            caller.token_name,
            caller.scope.as_str(),
            need.as_str()
        ),
    ))
}

/// Why a request was not let in: (status, code, reason), as the refusal says it.
pub(crate) type Refusal = (StatusCode, &'static str, String);

/// Who is asking: the live token behind the request's `Authorization: Bearer` header or,
/// for reads only (GET, HEAD), behind the web page's session cookie (see [`super::ui`]): a
/// cookie never changes state, so a page elsewhere cannot make a browser change it (CSRF).
/// The token is looked up on every request, so a revoked one stops working at once.
pub(crate) async fn identify(
    state: &AdminState,
    method: &Method,
    headers: &header::HeaderMap,
) -> Result<(ApiTokenRecord, Credential), Refusal> {
    let credential = presented(method, headers)?;
    let record = resolve(state, &credential).await?;
    Ok((record, credential))
}

fn unauthorized(why: &str) -> Refusal {
    (StatusCode::UNAUTHORIZED, "unauthorized", why.to_string())
}

/// The credential a request carries: its bearer token, else (reads only) its session cookie.
fn presented(method: &Method, headers: &header::HeaderMap) -> Result<Credential, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    match (bearer, super::ui::session_cookie(headers)) {
        (Some(token), _) => Ok(Credential::TokenHash(hash(&token))),
        (None, Some(session)) => {
            if method != Method::GET && method != Method::HEAD {
                return Err(unauthorized(
                    "the web page's session cookie only reads; this needs a bearer token (Authorization: Bearer ...)",
                ));
            }
            Ok(Credential::Session(session))
        }
        (None, None) => Err(unauthorized(
            "a bearer token is needed (Authorization: Bearer ...)",
        )),
    }
}

/// The live token behind `credential`, now.
pub(crate) async fn resolve(
    state: &AdminState,
    credential: &Credential,
) -> Result<ApiTokenRecord, Refusal> {
    let token_hash = match credential {
        Credential::TokenHash(h) => h.clone(),
        Credential::Session(session) => state
            .ui_sessions
            .token_hash(session, super::now_ms())
            .ok_or_else(|| unauthorized("the web page's session has ended; log in again"))?,
    };
    let found = state
        .store
        .run(move |store| store.api_token_by_hash(&token_hash))
        .await;
    match found {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(unauthorized("unknown or revoked token")),
        Err(e) => {
            tracing::error!("admin API: store: {e}");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the store failed: {e}"),
            ))
        }
    }
}

/// The middleware in front of every admin route but the OpenAPI document.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let need = needed(request.method(), request.uri().path());
    let what = format!("{} {}", request.method(), request.uri().path());
    let refuse = |status: StatusCode, code: &str, why: String| {
        let mut response = refused(&state, peer, &what, status, code, why).into_response();
        // The refused request's body is left unread: the connection is not reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    };
    let (record, credential) = match identify(&state, request.method(), request.headers()).await {
        Ok(found) => found,
        Err((StatusCode::INTERNAL_SERVER_ERROR, code, why)) => {
            return Failure::new(StatusCode::INTERNAL_SERVER_ERROR, code, why).into_response();
        }
        Err((status, code, why)) => return refuse(status, code, why),
    };
    let scope = TokenScope::parse(&record.scope).unwrap_or(TokenScope::ReadOnly);
    if !scope.allows(need) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} is {}; this needs an {} token",
                record.name,
                scope.as_str(),
                need.as_str()
            ),
        );
    }
    let mut request = request;
    request.extensions_mut().insert(Caller {
        scope,
        token_name: record.name,
        peer,
        what,
        credential,
    });
    let mut response = next.run(request).await;
    // Responses may carry machine data: never cached by anything between.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_hashes_and_found_by_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let store = &*store;
        let (rec, token) = create(store, "ci", TokenScope::ReadOnly, 1).unwrap();
        assert!(token.starts_with(&format!("kiln_{}_", rec.id)));
        assert_eq!(token.len(), "kiln_".len() + 12 + 1 + 64);
        assert_eq!(store.api_token_by_hash(&hash(&token)).unwrap(), Some(rec));
        assert_eq!(store.api_token_by_hash(&token).unwrap(), None);
    }

    #[test]
    fn the_first_token_is_made_once_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let store = &*store;
        ensure_first_token(store, dir.path(), 1).unwrap();
        let file = dir.path().join(FIRST_TOKEN_FILE);
        let token = std::fs::read_to_string(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let rec = store
            .api_token_by_hash(&hash(token.trim()))
            .unwrap()
            .unwrap();
        assert_eq!(rec.scope, "admin");
        ensure_first_token(store, dir.path(), 2).unwrap();
        assert_eq!(store.api_tokens().unwrap().len(), 1);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), token);
    }
}
