//! The operator web page at `/ui/` on the admin listener: static HTML, CSS and JavaScript
//! embedded in the binary (no build step, nothing fetched from elsewhere) that reads the admin
//! API and follows its event stream.
//!
//! Access: `GET /ui/login` is a form (no data) posting a token to `POST /ui/session`, which
//! checks it and sets an `HttpOnly; Secure; SameSite=Strict` cookie holding a random session
//! id; the token itself stays on the server, in memory, as its hash. The cookie is accepted
//! for reads only (GET, HEAD; see [`super::auth::identify`]), so no cross-site page can make
//! a browser change anything, and the token behind it is looked up on every request, so a
//! revoked token ends its sessions. Without a session, the page redirects to the login form
//! and its script and data answer 401; only what the login form itself shows (its style
//! sheet, the icon) is served to anyone.

mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub use sessions::Sessions;

use super::AdminState;
use super::auth::{identify, refused};

/// The session cookie's name.
pub const COOKIE: &str = "kiln_ui";
/// Where the page and its login form live.
pub const PAGE: &str = "/ui/";
pub const LOGIN: &str = "/ui/login";

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// Where the login form says a token was refused (fixed text: nothing sent is echoed back).
const LOGIN_FAILED_MARK: &str = "<!--login-failed-->";
const LOGIN_FAILED_TEXT: &str =
    r#"<p class="error" id="login-error">That token is unknown or revoked.</p>"#;

/// What every answer under `/ui/` carries: only this origin's scripts, styles and
/// connections (no inline script, no framing), and nothing cached or sniffed.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes (outside the API's token middleware: the page checks for itself).
pub fn routes(state: Arc<AdminState>) -> axum::Router<Arc<AdminState>> {
    let guarded = axum::Router::new()
        .route(PAGE, get(|| async { html(INDEX_HTML) }))
        .route("/ui/index.html", get(|| async { html(INDEX_HTML) }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, require_session));
    axum::Router::new()
        .merge(guarded)
        .route("/ui", get(|| async { see_other(PAGE) }))
        .route(LOGIN, get(|| async { html(LOGIN_HTML) }))
        // The login form's look: no data in them.
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route("/ui/session", post(login))
        .route("/ui/logout", post(logout))
        .layer(axum::middleware::map_response(secure_headers))
}

fn html(body: &'static str) -> Response {
    asset("text/html; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it a form's POST says `Origin: null`.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The session id the request's cookie carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a browser asked for a page (it is sent to the login form) rather than data.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The page and its assets need a live session (or a bearer token): a browser without one is
/// sent to the login form, anything else refused.
async fn require_session(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match identify(&state, request.method(), request.headers()).await {
        Ok(_) => next.run(request).await,
        Err(_) if wants_html(request.headers()) => see_other(LOGIN),
        Err((status, code, why)) => {
            let what = format!("{} {}", request.method(), request.uri().path());
            refused(&state, peer, &what, status, code, why).into_response()
        }
    }
}

/// A POST from another origin (a page elsewhere posting a form here) is refused. Browsers say
/// where a request comes from in `Sec-Fetch-Site` (Chromium, Firefox, Safari) and in `Origin`;
/// when they do, it must be this listener (`Host` in HTTP/1.1, the URI's authority in HTTP/2).
fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    let Some(origin) = text(header::ORIGIN) else {
        return true;
    };
    let host = uri.authority().map(|a| a.as_str()).or(text(header::HOST));
    host.is_some_and(|host| origin.strip_prefix("https://") == Some(host))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

fn cookie(value: &str, max_age_s: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}"
    ))
    .expect("a session id is hex")
}

/// `POST /ui/session` (the login form): a live token opens a session; its cookie is set and
/// the browser sent to the page. A refused token is recorded like any refused API call.
async fn login(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let what = "POST /ui/session";
    if !same_origin(&headers, &uri) {
        let why = "a login posted from another origin".to_string();
        return refused(&state, peer, what, StatusCode::FORBIDDEN, "forbidden", why)
            .into_response();
    }
    let mut bearer = HeaderMap::new();
    let token = form.token.trim();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        bearer.insert(header::AUTHORIZATION, v);
    }
    match identify(&state, &Method::GET, &bearer).await {
        Ok((record, _)) => {
            let id = state
                .ui_sessions
                .open(super::auth::hash(token), super::now_ms());
            tracing::info!(peer = %peer, token = %record.name, "web page session opened");
            let mut response = see_other(PAGE);
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&id, sessions::LIFETIME.as_secs()),
            );
            response
        }
        Err((status, _, why)) => {
            let _ = refused(&state, peer, what, status, "unauthorized", why);
            let page = LOGIN_HTML.replace(LOGIN_FAILED_MARK, LOGIN_FAILED_TEXT);
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page,
            )
                .into_response()
        }
    }
}

/// `POST /ui/logout`: the session ends on the server and the cookie is cleared.
async fn logout(State(state): State<Arc<AdminState>>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers)
        && same_origin(&headers, &uri)
    {
        state.ui_sessions.close(&id);
    }
    let mut response = see_other(LOGIN);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[(header::COOKIE, "a=1; kiln_ui=abc123 ; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc123"));
        let h = headers(&[(header::COOKIE, "a=1"), (header::COOKIE, "kiln_ui=x")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("x"));
        assert_eq!(
            session_cookie(&headers(&[(header::COOKIE, "kiln_uix=1")])),
            None
        );
        assert_eq!(
            session_cookie(&headers(&[(header::COOKIE, "kiln_ui=")])),
            None
        );
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn posts_from_another_origin_are_told_apart() {
        let path: Uri = "/ui/session".parse().unwrap();
        let host = (header::HOST, "10.0.0.1:9443");
        let origin = |o| (header::ORIGIN, o);
        assert!(same_origin(&headers(std::slice::from_ref(&host)), &path));
        let ours = origin("https://10.0.0.1:9443");
        assert!(same_origin(&headers(&[host.clone(), ours.clone()]), &path));
        for other in ["https://evil.example", "http://10.0.0.1:9443", "null"] {
            assert!(
                !same_origin(&headers(&[host.clone(), origin(other)]), &path),
                "{other}"
            );
        }
        assert!(
            !same_origin(&headers(std::slice::from_ref(&ours)), &path),
            "no host to match"
        );
        // Fetch metadata, where the browser sends it, decides.
        let site = |v| (header::HeaderName::from_static("sec-fetch-site"), v);
        assert!(same_origin(
            &headers(&[site("same-origin"), origin("null")]),
            &path
        ));
        assert!(!same_origin(
            &headers(&[host.clone(), ours.clone(), site("cross-site")]),
            &path
        ));
        assert!(!same_origin(&headers(&[site("same-site")]), &path));
        // HTTP/2: no Host header, the authority is in the URI.
        let h2: Uri = "https://10.0.0.1:9443/ui/session".parse().unwrap();
        assert!(same_origin(&headers(&[ours]), &h2));
        assert!(!same_origin(
            &headers(&[origin("https://evil.example")]),
            &h2
        ));
    }

    #[test]
    fn the_cookie_is_for_this_origin_only_and_out_of_scripts_reach() {
        let c = cookie("00ff", 60);
        let c = c.to_str().unwrap();
        for part in [
            "kiln_ui=00ff",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.split("; ").any(|p| p == part), "{part} in {c}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_and_names_its_assets() {
        for page in [INDEX_HTML, LOGIN_HTML] {
            let lower = page.to_ascii_lowercase();
            // Every <script> has a src (CSP forbids inline ones), and nothing comes from elsewhere.
            for (i, _) in lower.match_indices("<script") {
                let tag = &lower[i..i + lower[i..].find('>').unwrap()];
                assert!(tag.contains("src=\"/ui/"), "{tag}");
            }
            assert!(!lower.contains("http://") && !lower.contains("https://"));
            assert!(!lower.contains(" style="), "no inline style");
            let handler = lower.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "no inline event handler");
        }
        assert!(INDEX_HTML.contains(r#"src="/ui/app.js""#));
        assert!(LOGIN_HTML.contains(LOGIN_FAILED_MARK));
        assert!(
            !LOGIN_HTML.contains("<script"),
            "the login form needs no script"
        );
    }
}
