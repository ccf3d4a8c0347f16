//! The operator web page in-process: the login form posts a token and gets a session cookie;
//! the page, its assets and the API's reads take the cookie, nothing that changes state does;
//! logging out or revoking the token ends it; without one a browser is sent to the login form
//! and anything else gets 401 and no data.

use kiln_api::TokenScope;
use serde_json::{Value, json};

mod common;
use common::{Server, documented_routes};

/// What one request to the page got back.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A browser-like client: redirects are not followed (the test reads them), cookies are sent
/// as given.
struct Browser {
    base: String,
    agent: ureq::Agent,
}

impl Browser {
    fn new(s: &Server) -> Browser {
        let agent = common::client_config(&s.data)
            .max_redirects(0)
            .build()
            .new_agent();
        Browser {
            base: s.base.clone(),
            agent,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some((ct, b)) => self
                .agent
                .run(req.header("content-type", ct).body(b.into_bytes()).unwrap()),
            None => self.agent.run(req.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Answer {
            status,
            headers,
            body: resp.into_body().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path, headers, None)
    }

    /// Posts the login form; the session cookie (`kiln_ui=ID`) when one was set.
    fn login(&self, token: &str) -> (Answer, Option<String>) {
        let form = format!("token={}", token.replace('_', "%5F"));
        let a = self.send(
            "POST",
            "/ui/session",
            &[],
            Some(("application/x-www-form-urlencoded", form)),
        );
        let cookie = a
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string);
        (a, cookie)
    }
}

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
m1,,,,52:54:00:ab:00:02,127.0.0.12,255.0.0.0,,,role=spare,/dev/vda
";

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

#[test]
fn without_a_session_the_page_sends_browsers_to_the_login_form_and_gives_no_data() {
    let s = Server::start();
    let b = Browser::new(&s);
    let login = b.get("/ui/login", &[HTML]);
    assert_eq!(login.status, 200);
    assert!(
        login.body.contains(r#"action="/ui/session""#),
        "{}",
        login.body
    );
    assert!(!login.body.contains("login-error"));
    let csp = login.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(login.header("x-content-type-options"), Some("nosniff"));

    let page = b.get("/ui/", &[HTML]);
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/ui/login"));
    assert!(!page.body.contains("machines"));
    for path in ["/ui/", "/ui/index.html", "/ui/app.js", "/api/v1/hardware"] {
        let a = b.get(path, &[("accept", "*/*")]);
        assert_eq!(a.status, 401, "{path}");
        assert_eq!(a.json()["code"], "unauthorized", "{path}: {}", a.body);
    }
    // What the login form shows needs no session (and holds no data).
    assert_eq!(b.get("/ui/style.css", &[]).status, 200);
    assert_eq!(b.get("/ui/favicon.svg", &[]).status, 200);
    // A cookie that names no session is no better.
    let forged = b.get("/api/v1/hardware", &[("cookie", "kiln_ui=00ff00ff")]);
    assert_eq!(forged.status, 401);
    assert!(
        forged.json()["message"]
            .as_str()
            .unwrap()
            .contains("log in again")
    );
}

#[test]
fn a_live_token_opens_a_session_whose_cookie_reads_the_page_and_the_api() {
    let s = Server::start();
    let b = Browser::new(&s);
    let (refused, cookie) = b.login("kiln_0_not-a-token");
    assert_eq!(refused.status, 401);
    assert!(cookie.is_none(), "no session for a made-up token");
    assert!(refused.body.contains("login-error"), "{}", refused.body);
    assert!(
        !refused.body.contains("not-a-token"),
        "nothing sent is echoed"
    );

    let (a, cookie) = b.login(&s.read_only);
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.header("location"), Some("/ui/"));
    let set = a.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|p| p == attr), "{attr} in {set}");
    }
    let cookie = cookie.unwrap();
    assert!(
        !cookie.contains(&s.read_only) && !set.contains(&s.read_only),
        "the token stays on the server"
    );
    let with = [("cookie", cookie.as_str()), HTML];

    let page = b.get("/ui/", &with);
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<script src="/ui/app.js""#));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let js = b.get("/ui/app.js", &with);
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.body.contains("EventSource"));
    assert_eq!(b.get("/ui/style.css", &with).status, 200);

    for path in [
        "/api/v1/hardware",
        "/api/v1/workflows?all=true",
        "/api/v1/discovered",
    ] {
        let a = b.get(path, &with);
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert!(a.json().is_array(), "{path}");
    }
    // A bearer token opens the page too (scripts and tools need no cookie).
    let bearer = format!("Bearer {}", s.read_only);
    assert_eq!(b.get("/ui/", &[("authorization", &bearer)]).status, 200);
}

#[test]
fn a_session_cookie_changes_nothing_even_for_an_admin_token() {
    let s = Server::start();
    let b = Browser::new(&s);
    let (_, cookie) = b.login(&s.admin);
    let cookie = cookie.unwrap();
    let (_, doc) = s.request_json("GET", kiln_api::routes::OPENAPI, Some(&s.admin), None);
    let routes = documented_routes(&doc);
    let changes: Vec<_> = routes.iter().filter(|(m, _)| m != "GET").collect();
    assert!(changes.len() > 10, "{routes:?}");
    for (method, path) in changes {
        let body = (method != "DELETE").then(|| ("application/json", "{}".to_string()));
        let a = b.send(method, path, &[("cookie", &cookie)], body);
        assert_eq!(
            a.status, 401,
            "{method} {path} with a session cookie: {}",
            a.body
        );
        assert!(
            a.json()["message"].as_str().unwrap().contains("only reads"),
            "{method} {path}: {}",
            a.body
        );
    }
    // Not one state change got through: an enrolment by cookie left nothing.
    let body = json!({"file_name": "h.csv", "csv": CSV}).to_string();
    let a = b.send(
        "POST",
        "/api/v1/hardware",
        &[("cookie", &cookie)],
        Some(("application/json", body)),
    );
    assert_eq!(a.status, 401);
    let (_, hw) = s.request_json("GET", "/api/v1/hardware", Some(&s.admin), None);
    assert_eq!(hw, json!([]));
    // Reads work with the same cookie.
    assert_eq!(
        b.get("/api/v1/hardware", &[("cookie", &cookie)]).status,
        200
    );
}

#[test]
fn logging_out_or_revoking_the_token_ends_the_session() {
    let s = Server::start();
    let b = Browser::new(&s);
    let token = s.token("wall-screen", TokenScope::ReadOnly);
    let (_, first) = b.login(&token);
    let (_, second) = b.login(&token);
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first, second);
    assert_eq!(b.get("/api/v1/hardware", &[("cookie", &first)]).status, 200);

    let out = b.send("POST", "/ui/logout", &[("cookie", &first)], None);
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/ui/login"));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(b.get("/api/v1/hardware", &[("cookie", &first)]).status, 401);
    let page = b.get("/ui/", &[("cookie", &first), HTML]);
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/ui/login"))
    );
    assert_eq!(
        b.get("/api/v1/hardware", &[("cookie", &second)]).status,
        200
    );

    // As `kiln token revoke` does it: straight in the store, by name.
    let revoked = s.store().revoke_api_token("wall-screen", 2).unwrap();
    assert_eq!(revoked, 1);
    let a = b.get("/api/v1/hardware", &[("cookie", &second)]);
    assert_eq!(a.status, 401, "a revoked token's session reads nothing");
    assert_eq!(a.json()["message"], "unknown or revoked token");
    let (again, cookie) = b.login(&token);
    assert_eq!((again.status, cookie), (401, None));
}

#[test]
fn a_login_posted_from_another_origin_is_refused() {
    let s = Server::start();
    let b = Browser::new(&s);
    let form = format!("token={}", s.read_only);
    let a = b.send(
        "POST",
        "/ui/session",
        &[("origin", "https://evil.example")],
        Some(("application/x-www-form-urlencoded", form)),
    );
    assert_eq!(a.status, 403);
    assert!(a.header("set-cookie").is_none());
    // The page's own origin is welcome.
    let ours = s.base.clone();
    let form = format!("token={}", s.read_only);
    let a = b.send(
        "POST",
        "/ui/session",
        &[("origin", &ours)],
        Some(("application/x-www-form-urlencoded", form)),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert!(a.header("set-cookie").is_some());
}

#[test]
fn the_last_preflight_is_kept_for_the_page() {
    let s = Server::start();
    let (status, _) = s.request_json("GET", kiln_api::PREFLIGHT_LAST, Some(&s.read_only), None);
    assert_eq!(status, 404, "none before the first");
    let body = json!({"csv": {"file_name": "rack.csv", "text": CSV}, "no_dhcp_probe": true});
    let (status, report) =
        s.request_json("POST", kiln_api::PREFLIGHT, Some(&s.read_only), Some(&body));
    assert_eq!(status, 200, "{report}");
    let (status, last) = s.request_json("GET", kiln_api::PREFLIGHT_LAST, Some(&s.read_only), None);
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["report"], report);
    assert!(last["at"].as_str().unwrap().ends_with('Z'));
    // The page reads it with its cookie.
    let b = Browser::new(&s);
    let (_, cookie) = b.login(&s.read_only);
    let a = b.get(kiln_api::PREFLIGHT_LAST, &[("cookie", &cookie.unwrap())]);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["report"], report);
    let (_, doc) = s.request_json("GET", kiln_api::routes::OPENAPI, Some(&s.admin), None);
    assert_eq!(
        doc["paths"]["/api/v1/preflight/last"]["get"]["operationId"],
        "preflight_last"
    );
}
