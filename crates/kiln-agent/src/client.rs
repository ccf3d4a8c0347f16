//! The agent's side of the protocol: claim the machine's credential, ask for the next
//! action, report on it. The server may be down (restarted, say): every call retries with
//! backoff until it answers, so a restart of kiln never loses the agent. When the kernel line
//! names other servers sharing the state, a call the current one does not answer moves on to
//! the next, and the agent stays there.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_api::MacAddr;
use kiln_api::agent::{ClaimRequest, Claimed, NextAction, Report, ReportKind, Seed};
use ureq::Body;
use ureq::http::Response;

/// What the kernel command line told the agent (set by kiln's iPXE script). It holds no
/// secret: the agent claims its credential from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Plain HTTP base (downloads; the agent API when the server offers no TLS).
    pub server: String,
    /// The agent API over TLS (`kiln.api=`) and the fingerprint of the CA that must have
    /// signed its certificate (`kiln.ca-sha256=`): the netbooting server's first, then the
    /// other servers' to move to. Empty: the API is on `server`, plain HTTP.
    pub api: Vec<(String, [u8; 32])>,
    pub mac: MacAddr,
    pub hostname: Option<String>,
    /// `kiln.inspect=1`: the machine is not enrolled; report its inventory and power off.
    pub inspect: bool,
}

impl Identity {
    /// Reads `kiln.server=`, `kiln.api=`, `kiln.ca-sha256=`, `kiln.mac=`, `kiln.hostname=`.
    pub fn from_cmdline(cmdline: &str) -> Result<Identity, String> {
        let get = |key: &str| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let server = get("kiln.server").ok_or("the kernel command line has no kiln.server=")?;
        let mac = get("kiln.mac").ok_or("the kernel command line has no kiln.mac=")?;
        let mac = mac
            .parse()
            .map_err(|e| format!("kiln.mac={mac} on the kernel command line: {e}"))?;
        let api = crate::tls::api_from_cmdline(cmdline);
        if api.is_none() && (get("kiln.api").is_some() || get("kiln.ca-sha256").is_some()) {
            // Never fall back to plain HTTP: the credential and seed would travel readable.
            return Err(
                "kiln.api= needs https:// URLs and kiln.ca-sha256= as many fingerprints \
                        of 64 hex digits, comma-separated"
                    .into(),
            );
        }
        let api = api.unwrap_or_default();
        Ok(Identity {
            server: server.trim_end_matches('/').to_string(),
            api,
            mac,
            hostname: get("kiln.hostname"),
            inspect: get("kiln.inspect").as_deref() == Some("1"),
        })
    }
}

/// Where the agent keeps its credential and seed for this boot (tmpfs, root only), so an
/// agent process started again need not claim again.
pub const STATE_DIR: &str = "/run/kiln-agent";

/// Why the server refused a call for good (not a network error: those are retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// 401: the credential is unknown or revoked.
    Unauthorized,
    /// 403: this address may not speak for the machine.
    Forbidden(String),
    /// 404: the server has no unfinished workflow for this machine.
    NotFound(String),
    /// 409: the report is about an action that is no longer running (or, for a claim,
    /// another agent already holds the credential).
    Stale(String),
    /// 410: the workflow ended.
    Gone,
    Other(u16, String),
}

/// One place the agent API is served, and an HTTP agent that trusts only its CA.
struct Endpoint {
    base: String,
    agent: ureq::Agent,
}

pub struct Client {
    id: Identity,
    endpoints: Vec<Endpoint>,
    /// Which endpoint calls go to: the netbooting server's until it stops answering.
    current: AtomicUsize,
    /// Retry delays: first, and the cap it doubles up to.
    pub backoff: (Duration, Duration),
    /// See [`STATE_DIR`].
    pub state_dir: PathBuf,
    token: OnceLock<String>,
}

impl Client {
    pub fn new(id: Identity) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build();
        let endpoints = if id.api.is_empty() {
            vec![Endpoint {
                base: id.server.clone(),
                agent: crate::tls::agent_for(None, config),
            }]
        } else {
            id.api
                .iter()
                .map(|(base, pin)| Endpoint {
                    base: base.clone(),
                    agent: crate::tls::agent_for(Some(*pin), config.clone()),
                })
                .collect()
        };
        Client {
            id,
            endpoints,
            current: AtomicUsize::new(0),
            backoff: (Duration::from_millis(500), Duration::from_secs(10)),
            state_dir: PathBuf::from(STATE_DIR),
            token: OnceLock::new(),
        }
    }

    /// The machine's credential: kept from an earlier agent process of this boot, or claimed
    /// from the server (once per netboot; the server refuses a second claimant).
    pub fn claim(&self) -> Result<(), Refused> {
        if self.token.get().is_some() {
            return Ok(());
        }
        let kept = self.state_dir.join("credential");
        if let Ok(t) = std::fs::read_to_string(&kept) {
            let _ = self.token.set(t.trim().to_string());
            return Ok(());
        }
        let body = serde_json::to_string(&ClaimRequest {
            mac: self.id.mac,
            run: agent_run(),
        })
        .expect("claims serialize");
        let (status, text) = self.retrying("claiming the machine's credential", |ep| {
            status_and_text(self.post_json(ep, "/v1/agent/claim", &body)?)
        });
        if status != 200 {
            return Err(Self::refused(status, text));
        }
        let claimed: Claimed = serde_json::from_str(&text)
            .map_err(|e| Refused::Other(status, format!("unreadable claim answer: {e}")))?;
        if let Err(e) = write_private(&kept, claimed.token.as_bytes()) {
            eprintln!(
                "kiln-agent: keeping the credential in {}: {e}",
                kept.display()
            );
        }
        println!(
            "kiln-agent: credential claimed for workflow {}",
            claimed.workflow
        );
        let _ = self.token.set(claimed.token);
        Ok(())
    }

    /// Inspection-only mode: a ticket good for one inventory report of this MAC.
    pub fn inspect_claim(&self) -> Result<(), Refused> {
        let body = serde_json::to_string(&ClaimRequest {
            mac: self.id.mac,
            run: agent_run(),
        })
        .expect("claims serialize");
        let (status, text) = self.retrying("taking an inspection ticket", |ep| {
            status_and_text(self.post_json(ep, "/v1/agent/inspect/claim", &body)?)
        });
        if status != 200 {
            return Err(Self::refused(status, text));
        }
        let claimed: Claimed = serde_json::from_str(&text)
            .map_err(|e| Refused::Other(status, format!("unreadable ticket: {e}")))?;
        let _ = self.token.set(claimed.token);
        Ok(())
    }

    /// Inspection-only mode: the inventory, on the ticket; retried until the server answers.
    pub fn send_inspection(
        &self,
        inventory: &kiln_api::inventory::Inventory,
    ) -> Result<(), Refused> {
        let body = serde_json::to_string(inventory).expect("inventories serialize");
        let (status, text) = self.retrying("sending the inspection", |ep| {
            status_and_text(self.post_json(ep, "/v1/agent/inspect/inventory", &body)?)
        });
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Self::refused(status, text))
        }
    }

    /// The machine's cloud-init seed. The server hands it out once per workflow, so it is
    /// kept (root only, tmpfs) for retries of the action.
    pub fn seed(&self) -> Result<Seed, Refused> {
        let kept = self.state_dir.join("seed.json");
        if let Some(seed) = std::fs::read_to_string(&kept)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            return Ok(seed);
        }
        let (status, body) = self.get_retrying("fetching the cloud-init seed", "/v1/agent/seed");
        if status != 200 {
            return Err(Self::refused(status, body));
        }
        let seed: Seed = serde_json::from_str(&body)
            .map_err(|e| Refused::Other(status, format!("unreadable seed: {e}")))?;
        if let Err(e) = write_private(&kept, body.as_bytes()) {
            eprintln!("kiln-agent: keeping the seed in {}: {e}", kept.display());
        }
        Ok(seed)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.get().map_or("", String::as_str))
    }

    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// `path` on the agent API in use.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint().base)
    }

    fn endpoint(&self) -> &Endpoint {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Runs `call` until a server answers; returns its status and body. A call the current
    /// endpoint fails (no answer, or a server error) moves on to the next one at once; after a
    /// round of all of them without an answer, it waits (backoff) before the next round.
    fn retrying(
        &self,
        what: &str,
        call: impl Fn(&Endpoint) -> Result<(u16, String), ureq::Error>,
    ) -> (u16, String) {
        let mut delay = self.backoff.0;
        let mut failed = 0usize;
        loop {
            let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
            let ep = &self.endpoints[i];
            let why = match call(ep) {
                Ok((status, body)) if status < 500 => return (status, body),
                Ok((status, body)) => format!("server error {status}: {}", body.trim()),
                Err(e) => e.to_string(),
            };
            failed += 1;
            let next = (i + 1) % self.endpoints.len();
            if next != i {
                // Another thread (progress reports) may have moved on already.
                let _ =
                    self.current
                        .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
            }
            if failed.is_multiple_of(self.endpoints.len()) {
                eprintln!(
                    "kiln-agent: {what} at {}: {why}; retrying in {} ms",
                    ep.base,
                    delay.as_millis()
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(self.backoff.1);
            } else {
                eprintln!(
                    "kiln-agent: {what} at {}: {why}; moving to {}",
                    ep.base, self.endpoints[next].base
                );
            }
        }
    }

    fn refused(status: u16, body: String) -> Refused {
        match status {
            401 => Refused::Unauthorized,
            403 => Refused::Forbidden(body.trim().to_string()),
            404 => Refused::NotFound(body.trim().to_string()),
            409 => Refused::Stale(body.trim().to_string()),
            410 => Refused::Gone,
            _ => Refused::Other(status, body.trim().to_string()),
        }
    }

    pub fn next(&self) -> Result<NextAction, Refused> {
        // Naming this run lets the server answer a retried call (lost reply) with the same
        // attempt instead of counting an interruption.
        let path = format!("/v1/agent/next?run={}", agent_run());
        let (status, body) = self.get_retrying("asking for the next action", &path);
        if status != 200 {
            return Err(Self::refused(status, body));
        }
        serde_json::from_str(&body)
            .map_err(|e| Refused::Other(status, format!("unreadable answer: {e}")))
    }

    /// One try, no retry: for progress and log lines, which may be lost
    /// while the server is away (the final result is not: see [`Client::report`]).
    pub fn try_report(&self, index: usize, attempt: u32, kind: ReportKind) -> bool {
        let body = report_body(index, attempt, kind);
        let sent = self.post_json(self.endpoint(), "/v1/agent/report", &body);
        matches!(sent, Ok(r) if r.status().is_success())
    }

    /// Reports until the server takes it (or refuses it for good).
    pub fn report(&self, index: usize, attempt: u32, kind: ReportKind) -> Result<(), Refused> {
        let body = report_body(index, attempt, kind);
        let (status, text) = self.retrying("reporting", |ep| {
            status_and_text(self.post_json(ep, "/v1/agent/report", &body)?)
        });
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Self::refused(status, text))
        }
    }

    /// GETs `path` until a server answers.
    fn get_retrying(&self, what: &str, path: &str) -> (u16, String) {
        self.retrying(what, |ep| {
            status_and_text(
                ep.agent
                    .get(format!("{}{path}", ep.base))
                    .header("authorization", self.bearer())
                    .call()?,
            )
        })
    }

    /// Sends the machine's hardware inventory, once: the server keeps it as the machine's
    /// latest and records an event. A refusal (too soon after the last one, say) is not fatal.
    pub fn send_inventory(&self, inventory: &kiln_api::inventory::Inventory) -> Result<(), String> {
        let body = serde_json::to_string(inventory).expect("inventories serialize");
        let sent = self.post_json(self.endpoint(), "/v1/agent/inventory", &body);
        match sent.and_then(status_and_text) {
            Ok((s, _)) if (200..300).contains(&s) => Ok(()),
            Ok((s, text)) => Err(format!("the server answered {s}: {}", text.trim())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Tells the server which disk the running action is about to write and what it holds;
    /// retried until the server answers. A refusal stops the write.
    pub fn disk_write(&self, write: &kiln_api::agent::DiskWrite) -> Result<(), Refused> {
        let body = serde_json::to_string(write).expect("disk writes serialize");
        let (status, text) = self.retrying("recording the disk write", |ep| {
            status_and_text(self.post_json(ep, "/v1/agent/disk", &body)?)
        });
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Self::refused(status, text))
        }
    }

    fn post_json(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &str,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut req = ep
            .agent
            .post(format!("{}{path}", ep.base))
            .header("content-type", "application/json");
        if self.token.get().is_some() {
            req = req.header("authorization", self.bearer());
        }
        req.send(body.as_bytes())
    }
}

/// A report as its JSON body.
fn report_body(index: usize, attempt: u32, kind: ReportKind) -> String {
    serde_json::to_string(&Report {
        index,
        attempt,
        kind,
    })
    .expect("reports serialize")
}

/// This agent process: the kernel's boot id and the PID, so a restart (a new boot, or the
/// agent started again) is a new run.
fn agent_run() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let boot: String = boot
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    format!("{boot}-{}", std::process::id())
}

/// Writes `bytes` to a new file only root can read (its directory made 0700).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A response's status and its body as text.
fn status_and_text(mut response: Response<Body>) -> Result<(u16, String), ureq::Error> {
    let text = response.body_mut().read_to_string()?;
    Ok((response.status().as_u16(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose calls go to `bases` in turn (no network: the tests' calls look at the
    /// endpoint's base only).
    fn client_over(bases: &[&str]) -> Client {
        let id = Identity::from_cmdline("kiln.server=http://k kiln.mac=52:54:00:aa:00:01").unwrap();
        let mut client = Client::new(id);
        let agent = client.endpoints[0].agent.clone();
        client.endpoints = bases
            .iter()
            .map(|b| Endpoint {
                base: b.to_string(),
                agent: agent.clone(),
            })
            .collect();
        client.backoff = (Duration::from_millis(1), Duration::from_millis(2));
        client
    }

    fn refused() -> ureq::Error {
        ureq::Error::Io(std::io::ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn a_call_the_server_does_not_answer_moves_on_to_the_next_and_stays_there() {
        let client = client_over(&["https://a", "https://b", "https://c"]);
        let calls = std::sync::Mutex::new(Vec::new());
        let answer = client.retrying("asking", |ep| {
            calls.lock().unwrap().push(ep.base.clone());
            match ep.base.as_str() {
                "https://a" => Err(refused()),
                "https://b" => Ok((503, "store unreachable".into())),
                _ => Ok((200, "from c".into())),
            }
        });
        assert_eq!(answer, (200, "from c".into()));
        assert_eq!(
            *calls.lock().unwrap(),
            ["https://a", "https://b", "https://c"]
        );
        // The next call starts where the last answer came from.
        assert_eq!(client.url("/v1/agent/next"), "https://c/v1/agent/next");
        let again = client.retrying("asking", |ep| Ok((200, ep.base.clone())));
        assert_eq!(again.1, "https://c");
        // A refusal (4xx) is an answer: no moving on.
        let refusal = client.retrying("asking", |_| Ok((409, "stale".into())));
        assert_eq!(refusal.0, 409);
        assert_eq!(client.url(""), "https://c");
    }

    #[test]
    fn when_no_server_answers_it_goes_round_again_until_one_does() {
        let client = client_over(&["https://a", "https://b"]);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let answer = client.retrying("asking", |ep| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            // Both dead for two rounds, then a is back.
            if n >= 4 && ep.base == "https://a" {
                Ok((200, "a again".into()))
            } else {
                Err(refused())
            }
        });
        assert_eq!(answer.1, "a again");
        assert_eq!(calls.load(Ordering::Relaxed), 5);
        assert_eq!(client.url(""), "https://a");
    }

    #[test]
    fn reads_the_kernel_command_line() {
        let id = Identity::from_cmdline(
            "BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0 kiln.server=http://10.77.0.1:8080/ kiln.mac=52:54:00:aa:00:01 kiln.hostname=node1\n",
        )
        .unwrap();
        assert_eq!(id.server, "http://10.77.0.1:8080");
        assert!(id.api.is_empty());
        let pin = "ab".repeat(32);
        let tls = Identity::from_cmdline(&format!(
            "kiln.server=http://k:8080 kiln.api=https://k:8443/ kiln.ca-sha256={pin} kiln.mac=52:54:00:aa:00:01"
        ))
        .unwrap();
        assert_eq!(tls.api, [("https://k:8443".to_string(), [0xab; 32])]);
        assert_eq!(
            Client::new(tls).url("/v1/agent/next"),
            "https://k:8443/v1/agent/next"
        );
        // A bad fingerprint is an error, never a fall-back to plain HTTP.
        assert!(
            Identity::from_cmdline("kiln.server=http://k kiln.api=https://k kiln.ca-sha256=12 kiln.mac=52:54:00:aa:00:01")
                .is_err()
        );
        assert_eq!(id.mac.to_string(), "52:54:00:aa:00:01");
        assert_eq!(id.hostname.as_deref(), Some("node1"));
        assert!(!id.inspect);
        let inspecting = Identity::from_cmdline(
            "kiln.inspect=1 kiln.server=http://x kiln.mac=52:54:00:aa:00:01",
        )
        .unwrap();
        assert!(inspecting.inspect);
        assert!(
            Identity::from_cmdline("kiln.server=http://x")
                .unwrap_err()
                .contains("kiln.mac")
        );
        assert!(Identity::from_cmdline("kiln.server=http://x kiln.mac=zz").is_err());
        assert!(Identity::from_cmdline("kiln.serverx=1 kiln.mac=52:54:00:aa:00:01").is_err());
    }
}
