//! The admin API's client: how the `kiln` CLI and the lab (`kiln demo`, the tests) drive a
//! Kiln server.
//!
//! Where: [`Endpoint::server`] (`--server URL` / `KILN_SERVER`), or (on the server host)
//! `DATA_DIR/api.json`, which the server writes at start. Trust: [`Endpoint::ca`], or the data
//! dir's `tls/ca.crt`. Token: `KILN_TOKEN`, [`Endpoint::token_file`], or the data dir's
//! `admin.token`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_api::{ApiErrorBody, LocalServer};

pub mod files;
pub mod follow;
pub mod images;
pub mod logs;
mod progress;
pub mod render;
pub mod workflows;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How to reach the server; every field falls back to what the data dir says.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// Admin API (https://HOST:PORT); default: the data dir's `api.json`.
    pub server: Option<String>,
    /// CA certificate (PEM) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// File holding the bearer token (`KILN_TOKEN`, when set, wins).
    pub token_file: Option<PathBuf>,
}

/// `PUT /api/v1/images/NAME?k=v&...`: where an upload of image `name` goes, the query escaped.
pub fn upload_path(name: &str, q: &kiln_api::images::UploadQuery) -> String {
    use kiln_api::routes::{path, segment};
    let mut parts = vec![
        format!("replace={}", q.replace),
        format!("zstd_level={}", q.zstd_level),
    ];
    if let Some(sha) = &q.sha256 {
        parts.push(format!("sha256={}", segment(sha)));
    }
    if let Some(source) = &q.source {
        parts.push(format!("source={}", segment(source)));
    }
    if q.dry_run {
        parts.push("dry_run=true".into());
    }
    format!("{}?{}", path("images", Some(name), ""), parts.join("&"))
}

/// An error the server answered with (status and body), or not reaching it at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{body}")]
    Api { status: u16, body: ApiErrorBody },
    #[error("{0}")]
    Transport(String),
    /// The client could not be set up: no server found, no token, no CA.
    #[error("{0}")]
    Setup(String),
    /// Something given on this side (a file, an argument) could not be used.
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport(_) | ClientError::Setup(_) | ClientError::Input(_) => None,
        }
    }
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// `context: cause`, as the CLI prints a chain of errors.
fn setup(context: impl std::fmt::Display, cause: impl std::fmt::Display) -> ClientError {
    ClientError::Setup(format!("{context}: {cause}"))
}

fn read_trimmed(path: &Path, what: &str) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| setup(format_args!("reading the {what} {}", path.display()), e))?;
    Ok(text.trim().to_string())
}

/// Where the data dir's `api.json` says the local server is.
fn local_server(data_dir: &Path) -> Result<LocalServer, ClientError> {
    let path = data_dir.join("api.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        setup(
            format_args!(
                "no Kiln server found: {} is missing (start `kiln serve --data-dir {}`, or \
                 give --server URL / KILN_SERVER)",
                path.display(),
                data_dir.display()
            ),
            e,
        )
    })?;
    serde_json::from_str(&text).map_err(|e| setup(format_args!("reading {}", path.display()), e))
}

/// The base URL, the CA file and the token file to use.
fn locate(data_dir: &Path, args: &Endpoint) -> Result<(String, PathBuf, PathBuf), ClientError> {
    Ok(match &args.server {
        Some(url) => (
            url.trim_end_matches('/').to_string(),
            args.ca
                .clone()
                .unwrap_or_else(|| data_dir.join("tls/ca.crt")),
            args.token_file
                .clone()
                .unwrap_or_else(|| data_dir.join("admin.token")),
        ),
        None => {
            let l = local_server(data_dir)?;
            (
                l.url,
                args.ca.clone().unwrap_or_else(|| data_dir.join(&l.ca_file)),
                args.token_file
                    .clone()
                    .unwrap_or_else(|| data_dir.join(&l.token_file)),
            )
        }
    })
}

/// An agent that trusts only the CA in `ca_file`.
fn agent(ca_file: &Path) -> Result<ureq::Agent, ClientError> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        setup(
            format_args!(
                "reading the server's CA {} (give --ca FILE / KILN_CA)",
                ca_file.display()
            ),
            e,
        )
    })?;
    let ca = ureq::tls::Certificate::from_pem(&pem)
        .map_err(|e| {
            setup(
                format_args!("{}: not a PEM certificate", ca_file.display()),
                e,
            )
        })?
        .to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent())
}

impl Client {
    /// Finds the server and its credentials (see the module comment).
    pub fn connect(data_dir: &Path, args: &Endpoint) -> Result<Client, ClientError> {
        let (base, ca_file, token_file) = locate(data_dir, args)?;
        let token = match std::env::var("KILN_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => read_trimmed(&token_file, "token file (or set KILN_TOKEN)")?,
        };
        let agent = agent(&ca_file)?;
        if !base.starts_with("https://") {
            return Err(ClientError::Setup(format!(
                "--server {base}: the admin API is HTTPS (https://HOST:PORT)"
            )));
        }
        Ok(Client { base, token, agent })
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = result.map_err(|e| {
            ClientError::Transport(format!(
                "{what}: cannot reach the Kiln server at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| ClientError::Transport(format!("{what}: reading the answer: {e}")))?;
        if (200..300).contains(&status) {
            let text = if text.is_empty() { "null" } else { &text };
            return serde_json::from_str(text)
                .map_err(|e| ClientError::Transport(format!("{what}: unexpected answer: {e}")));
        }
        let body = serde_json::from_str(&text).unwrap_or_else(|_| ApiErrorBody {
            code: format!("http_{status}"),
            message: format!("{what}: HTTP {status}"),
            details: Vec::new(),
        });
        Err(ClientError::Api { status, body })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.finish(path, r)
    }

    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let json = serde_json::to_vec(body).expect("request bodies serialize");
        let url = self.url(path);
        let req = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            "PATCH" => self.agent.patch(&url),
            other => panic!("send: {other} has no body"),
        };
        let r = req
            .header("authorization", &self.auth())
            .header("content-type", "application/json")
            .send(&json[..]);
        self.finish(path, r)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self
            .agent
            .delete(&self.url(path))
            .header("authorization", &self.auth())
            .call();
        self.finish(path, r)
    }

    /// A PUT whose body (`len` bytes) is read from `body` as it goes out, never held whole.
    pub fn put_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<T, ClientError> {
        let r = self
            .agent
            .put(&self.url(path))
            .header("authorization", &self.auth())
            .header("content-type", "application/octet-stream")
            .header("content-length", &len.to_string())
            .send(ureq::SendBody::from_reader(body));
        self.finish(path, r)
    }

    /// A raw streaming GET (Server-Sent Events): the response's body, to read line by line.
    pub fn stream(&self, path: &str) -> Result<Box<dyn Read + Send>, ClientError> {
        let resp = self
            .agent
            .get(&self.url(path))
            .header("authorization", &self.auth())
            .header("accept", "text/event-stream")
            .call()
            .map_err(|e| ClientError::Transport(format!("{path}: {e}")))?;
        if !resp.status().is_success() {
            return Err(match self.finish::<serde_json::Value>(path, Ok(resp)) {
                Err(e) => e,
                Ok(_) => ClientError::Transport(format!("{path}: not an event stream")),
            });
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::images::UploadQuery;

    #[test]
    fn upload_queries_are_escaped() {
        let q = UploadQuery {
            sha256: Some("ab".repeat(32)),
            replace: true,
            zstd_level: 3,
            source: Some("./my disk&x=1.raw".into()),
            dry_run: false,
        };
        assert_eq!(
            upload_path("os", &q),
            format!(
                "/api/v1/images/os?replace=true&zstd_level=3&sha256={}&source=.%2Fmy%20disk%26x%3D1.raw",
                "ab".repeat(32)
            )
        );
    }

    fn endpoint(server: &str) -> Endpoint {
        Endpoint {
            server: Some(server.into()),
            ..Endpoint::default()
        }
    }

    #[test]
    fn without_api_json_the_error_says_how_to_find_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let e = Client::connect(dir.path(), &Endpoint::default())
            .err()
            .expect("no server to find");
        let text = e.to_string();
        assert!(text.starts_with("no Kiln server found: "), "{text}");
        assert!(text.contains("api.json is missing"), "{text}");
        assert_eq!(e.status(), None);
    }

    #[test]
    fn a_missing_ca_is_named_with_the_flag_that_gives_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "t0k\n").unwrap();
        let e = Client::connect(dir.path(), &endpoint("https://127.0.0.1:9443/"))
            .err()
            .expect("no CA");
        let text = e.to_string();
        assert!(text.contains("reading the server's CA"), "{text}");
        assert!(text.contains("--ca FILE"), "{text}");
    }

    #[test]
    fn the_api_json_of_a_data_dir_names_url_ca_and_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("api.json"),
            r#"{"url":"https://127.0.0.1:9443","ca_file":"tls/ca.crt","token_file":"admin.token"}"#,
        )
        .unwrap();
        let (url, ca, token) = locate(dir.path(), &Endpoint::default()).unwrap();
        assert_eq!(url, "https://127.0.0.1:9443");
        assert_eq!(ca, dir.path().join("tls/ca.crt"));
        assert_eq!(token, dir.path().join("admin.token"));
        let (url, _, _) = locate(dir.path(), &endpoint("https://h:1/")).unwrap();
        assert_eq!(url, "https://h:1");
    }
}
