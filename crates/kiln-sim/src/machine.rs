//! A simulated machine: what its firmware's iPXE, Kiln's agent OS and the installed OS do on
//! the wire, in the order they do it, from the machine's own MAC and reserved address.
//!
//! Power on (from its BMC) → iPXE: DHCP (option 77 `iPXE`) → GET the script → netboot:
//! GET kernel and initrd (bytes discarded) → agent OS: DHCP (udhcpc) → the agent protocol
//! (claim, next, reports; image2disk streams the image and checks its sha256, bytes
//! discarded; cloud-init fetches the seed) → reboot → iPXE again: DHCP, script says "local
//! disk" → the installed OS phones home (cloud-init's phone_home, from the seed). A restart
//! or power-off from the BMC cuts whatever runs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kiln_api::agent::{
    ActionKind, ActionSpec, ClaimRequest, Claimed, DiskWrite, NextAction, Progress, Report,
    ReportKind, Seed,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::dhcp::Asker;
use crate::dhcp_port::DhcpPort;
use crate::redfish::Chassis;
use crate::script::{self, Boot};
use crate::stats::{Measure, Samples};

/// How long one HTTP request may take, and how often an agent call is tried when the
/// server does not answer (connection refused, 5xx), as the agent retries.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
const CALL_TRIES: u32 = 30;
/// Bounds: actions one agent run takes, firmware boots one power-on makes.
const MAX_STEPS: u32 = 1000;
const MAX_BOOTS: u32 = 8;
const PHONE_HOME_TRIES: u32 = 10;

/// What all machines of a rack share.
pub struct Rack {
    pub dhcp: Arc<DhcpPort>,
    /// What boots first: iPXE itself (QEMU's NIC ROM) or a PXE ROM that fetches iPXE by TFTP.
    pub firmware: Firmware,
    pub samples: Samples,
    /// Option 93 the machines' iPXE sends (0: BIOS).
    pub arch: u16,
    pub counters: Counters,
    /// From the agent's reboot to iPXE's first DHCP: the firmware's reset and POST. (A
    /// machine back within Kiln's inventory refresh would still be offered the netboot.)
    pub reboot_delay: Duration,
    /// How long an OS takes from its kernel to the network (the agent OS to its DHCP, the
    /// installed OS to its phone-home).
    pub os_boot_delay: Duration,
}

/// The machines' network boot ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Firmware {
    /// iPXE in the NIC's ROM (as QEMU's): its DHCP gets the script's URL at once.
    #[default]
    Ipxe,
    /// A PXE ROM: DHCP without iPXE's user class, iPXE fetched by TFTP, then iPXE's DHCP.
    Pxe,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub dhcp_resent: AtomicU64,
    pub boot_bytes: AtomicU64,
    pub image_bytes: AtomicU64,
    pub failures: AtomicU64,
    /// iPXE netboots by the server whose offer the machine took (several servers: the split).
    pub netboots_by_server: Mutex<std::collections::BTreeMap<Ipv4Addr, u64>>,
}

/// What the image on the "disk" left for the installed OS: its cloud-init seed.
#[derive(Debug, Clone)]
struct Installed {
    phone_home: Option<String>,
    instance_id: String,
}

pub struct SimMachine {
    pub hostname: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub chassis: Arc<Chassis>,
    disk: Mutex<Option<Installed>>,
    /// The last thing it did or failed at (for the report of a machine that did not finish).
    pub status: Mutex<String>,
    pub powered_on: OnceLock<Instant>,
    pub phoned_home: OnceLock<Instant>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("DHCP: {0}")]
    Dhcp(#[from] crate::dhcp_port::DoraError),
    #[error("HTTP {what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the server answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Protocol(String),
}

/// How the agent OS ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    Stay,
    Reboot,
    Poweroff,
}

impl SimMachine {
    pub fn new(hostname: &str, mac: [u8; 6], ip: Ipv4Addr) -> Arc<SimMachine> {
        Arc::new(SimMachine {
            hostname: hostname.into(),
            mac,
            ip,
            chassis: Arc::new(Chassis::default()),
            disk: Mutex::new(None),
            status: Mutex::new("off".into()),
            powered_on: OnceLock::new(),
            phoned_home: OnceLock::new(),
        })
    }

    pub fn mac_text(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    fn set_status(&self, s: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s.into();
    }

    /// Follows the machine's power line for ever: each power-on or restart starts a boot,
    /// cutting the one that runs.
    pub async fn run(self: Arc<Self>, rack: Arc<Rack>) {
        let mut power = self.chassis.subscribe();
        let mut running: Option<JoinHandle<()>> = None;
        loop {
            let p = *power.borrow_and_update();
            if let Some(h) = running.take() {
                h.abort();
            }
            if p.on {
                let _ = self.powered_on.set(Instant::now());
                let (me, rack) = (Arc::clone(&self), Arc::clone(&rack));
                running = Some(tokio::spawn(async move {
                    match me.power_on(&rack).await {
                        Ok(()) => {}
                        Err(e) => {
                            rack.counters.failures.fetch_add(1, Ordering::Relaxed);
                            me.set_status(format!("failed: {e}"));
                        }
                    }
                }));
            } else {
                self.set_status("off");
            }
            if power.changed().await.is_err() {
                return;
            }
        }
    }

    fn client(&self, tls: Option<[u8; 32]>) -> Result<reqwest::Client, SimError> {
        // reqwest is built without a default provider (as kiln-bmc builds it): ring, the
        // one the agent uses.
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let mut b = reqwest::Client::builder()
            .local_address(IpAddr::V4(self.ip))
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pin) = tls {
            let config = kiln_agent::tls::pinned_client_config(pin);
            b = b.tls_backend_preconfigured((*config).clone());
        }
        b.build().map_err(|source| SimError::Http {
            what: "building the client".into(),
            source,
        })
    }

    /// From power-on to the installed OS (or to where the workflow leaves the machine).
    async fn power_on(&self, rack: &Rack) -> Result<(), SimError> {
        // A real machine's POST takes longer still (tens of seconds on a server).
        self.set_status("firmware: POST");
        tokio::time::sleep(rack.reboot_delay).await;
        for _ in 0..MAX_BOOTS {
            // A boot starts with no connections: none is reused across a reboot.
            let http = self.client(None)?;
            if rack.firmware == Firmware::Pxe && !self.pxe_loads_ipxe(rack).await? {
                return self.disk_boot(rack, &http).await;
            }
            self.set_status("iPXE: DHCP");
            let dora = rack
                .dhcp
                .dora(self.mac, Asker::Ipxe { arch: rack.arch })
                .await?;
            self.note_dora(rack, &dora);
            *rack
                .counters
                .netboots_by_server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(dora.lease.server)
                .or_default() += 1;
            // No boot file: netboot is off for this machine; iPXE gives up and the
            // firmware boots the disk.
            let Some(url) = dora.lease.boot_file.clone() else {
                return self.disk_boot(rack, &http).await;
            };
            self.set_status("iPXE: script");
            let t0 = Instant::now();
            let text = get_text(&http, &url, "the iPXE script").await?;
            rack.samples.add(Measure::IpxeScript, t0.elapsed());
            let boot = script::parse_ipxe(&text)
                .ok_or_else(|| SimError::Protocol(format!("unreadable iPXE script: {text}")))?;
            match boot {
                Boot::Disk => return self.disk_boot(rack, &http).await,
                Boot::Agent {
                    kernel,
                    initrd,
                    cmdline,
                } => {
                    self.set_status("iPXE: kernel and initrd");
                    for u in [&kernel, &initrd] {
                        let n = discard(&http, u, None::<&NoProgress>).await?.0;
                        rack.counters.boot_bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    self.set_status("agent OS: booting");
                    tokio::time::sleep(rack.os_boot_delay).await;
                    self.set_status("agent OS: DHCP");
                    let d = rack.dhcp.dora(self.mac, Asker::Plain).await?;
                    self.note_dora(rack, &d);
                    match self.agent(rack, &http, &cmdline).await? {
                        Leave::Reboot => {
                            self.set_status("rebooting (firmware)");
                            tokio::time::sleep(rack.reboot_delay).await;
                            continue;
                        }
                        Leave::Poweroff => {
                            self.set_status("powered off by the agent");
                            self.chassis.off();
                            return Ok(());
                        }
                        Leave::Stay => {
                            self.set_status("agent OS: nothing more to do");
                            return Ok(());
                        }
                    }
                }
            }
        }
        Err(SimError::Protocol(format!(
            "still netbooting after {MAX_BOOTS} boots"
        )))
    }

    /// The PXE ROM's DHCP and TFTP fetch of iPXE; false when Kiln offered no boot file
    /// (netboot off: the firmware goes on to the disk).
    async fn pxe_loads_ipxe(&self, rack: &Rack) -> Result<bool, SimError> {
        self.set_status("PXE: DHCP");
        let d = rack
            .dhcp
            .dora(self.mac, Asker::Pxe { arch: rack.arch })
            .await?;
        self.note_dora(rack, &d);
        let Some(file) = d.lease.boot_file.clone() else {
            return Ok(false);
        };
        self.set_status("PXE: TFTP");
        let t0 = Instant::now();
        let n = crate::tftp::fetch(self.ip, (d.lease.server, 69).into(), &file)
            .await
            .map_err(SimError::Protocol)?;
        rack.samples.add(Measure::TftpIpxe, t0.elapsed());
        rack.counters.boot_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(true)
    }

    fn note_dora(&self, rack: &Rack, d: &crate::dhcp_port::Dora) {
        rack.samples.add(Measure::DhcpOffer, d.offer_after);
        rack.samples.add(Measure::DhcpAck, d.ack_after);
        rack.counters
            .dhcp_resent
            .fetch_add(u64::from(d.resent), Ordering::Relaxed);
        if d.lease.ip != self.ip {
            self.set_status(format!("DHCP gave {} instead of {}", d.lease.ip, self.ip));
        }
    }

    /// The installed OS: cloud-init phones home (static network from the seed: no DHCP).
    async fn disk_boot(&self, rack: &Rack, http: &reqwest::Client) -> Result<(), SimError> {
        let installed = self.disk.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(installed) = installed else {
            self.set_status("no bootable device");
            return Ok(());
        };
        let Some(url) = installed.phone_home else {
            self.set_status("installed OS up (its seed has no phone_home)");
            return Ok(());
        };
        self.set_status("installed OS: booting");
        tokio::time::sleep(rack.os_boot_delay).await;
        self.set_status("installed OS: phone-home");
        let body = script::phone_home_body(&installed.instance_id, &self.hostname);
        // cloud-init's phone_home tries 10 times (`tries: 10` in the seed), 1 s... apart.
        let mut last = None;
        for _ in 0..PHONE_HOME_TRIES {
            let t0 = Instant::now();
            let sent = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_server_error() => last = Some(check(r, "phone-home").await),
                Ok(r) => {
                    rack.samples.add(Measure::PhoneHome, t0.elapsed());
                    last = Some(check(r, "phone-home").await);
                    break;
                }
                Err(source) => {
                    last = Some(Err(SimError::Http {
                        what: "phone-home".into(),
                        source,
                    }))
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        last.unwrap_or_else(|| Err(SimError::Protocol("phone-home: no try".into())))?;
        let _ = self.phoned_home.set(Instant::now());
        self.set_status("installed OS: phoned home");
        Ok(())
    }

    /// The agent's loop, as kiln-agent's runner does it.
    async fn agent(
        &self,
        rack: &Rack,
        http: &reqwest::Client,
        cmdline: &str,
    ) -> Result<Leave, SimError> {
        let id = kiln_agent::client::Identity::from_cmdline(cmdline).map_err(SimError::Protocol)?;
        // The netbooting server's API (a simulated agent does not move to another).
        let (base, api) = match id.api.first() {
            Some((url, pin)) => (url.clone(), self.client(Some(*pin))?),
            None => (id.server.clone(), http.clone()),
        };
        let run = format!(
            "sim-{}-{}",
            self.mac_text().replace(':', ""),
            self.chassis.power().boots
        );
        self.set_status("agent: claim");
        let claim = serde_json::to_string(&ClaimRequest {
            mac: id.mac,
            run: run.clone(),
        })
        .expect("claims serialize");
        let text = call(rack, &api, "claim", |c| {
            c.post(format!("{base}/v1/agent/claim"))
                .header("content-type", "application/json")
                .body(claim.clone())
        })
        .await?;
        let claimed: Claimed = parse(&text, "claim")?;
        let token = format!("Bearer {}", claimed.token);
        let agent = Agent {
            rack,
            api: &api,
            http,
            base: &base,
            token: &token,
        };
        // As the agent: the inventory after the claim; a refusal does not stop the run.
        let inv = serde_json::to_string(&crate::inventory::inventory(
            &self.hostname,
            &self.mac_text(),
        ))
        .expect("inventories serialize");
        self.set_status("agent: inventory");
        let _ = agent
            .call("inventory", |c, b| {
                c.post(format!("{b}/v1/agent/inventory"))
                    .header("content-type", "application/json")
                    .body(inv.clone())
            })
            .await;
        for _ in 0..MAX_STEPS {
            self.set_status("agent: next");
            let text = agent
                .call("next", |c, b| c.get(format!("{b}/v1/agent/next?run={run}")))
                .await?;
            match parse::<NextAction>(&text, "next")? {
                NextAction::Done { .. } => return Ok(Leave::Stay),
                NextAction::Wait { seconds } => {
                    tokio::time::sleep(Duration::from_secs(seconds.clamp(1, 300))).await
                }
                NextAction::Run {
                    index,
                    attempt,
                    action,
                } => {
                    self.set_status(format!("agent: {} ({})", action.name, action.kind));
                    let (kind, leave) = match self.execute(&agent, index, attempt, &action).await {
                        Ok((message, leave)) => (ReportKind::Succeeded { message }, leave),
                        Err(message) => (ReportKind::Failed { message }, Leave::Stay),
                    };
                    // As the agent: a stale report (409) is dropped, a finished workflow
                    // (410) ends the run.
                    match agent.report(index, attempt, kind).await {
                        Ok(()) => {}
                        Err(SimError::Refused { status: 409, .. }) => continue,
                        Err(SimError::Refused { status: 410, .. }) => return Ok(Leave::Stay),
                        Err(e) => return Err(e),
                    }
                    if leave != Leave::Stay {
                        return Ok(leave);
                    }
                }
            }
        }
        Err(SimError::Protocol(format!(
            "the agent ran {MAX_STEPS} steps without an end"
        )))
    }

    async fn execute(
        &self,
        agent: &Agent<'_>,
        index: usize,
        attempt: u32,
        action: &ActionSpec,
    ) -> Result<(String, Leave), String> {
        match action.kind {
            ActionKind::Image2disk => self.image2disk(agent, index, attempt, action).await,
            ActionKind::CloudInit => {
                let text = agent
                    .call("seed", |c, b| c.get(format!("{b}/v1/agent/seed")))
                    .await
                    .map_err(|e| format!("fetching the cloud-init seed: {e}"))?;
                let seed: Seed = parse(&text, "seed").map_err(|e| e.to_string())?;
                *self.disk.lock().unwrap_or_else(|e| e.into_inner()) = Some(Installed {
                    phone_home: script::phone_home_url(&seed.user_data),
                    instance_id: script::instance_id(&seed.meta_data).unwrap_or_default(),
                });
                Ok(("NoCloud seed written (simulated disk)".into(), Leave::Stay))
            }
            ActionKind::Writefile | ActionKind::Exec | ActionKind::Wipe => {
                Ok((format!("{} simulated (no disk)", action.kind), Leave::Stay))
            }
            ActionKind::Reboot | ActionKind::Kexec => {
                Ok(("rebooting into the installed OS".into(), Leave::Reboot))
            }
            ActionKind::Poweroff => Ok(("powering off".into(), Leave::Poweroff)),
        }
    }

    /// Streams the image, checks its sha256 (of the served bytes, as the agent does), and
    /// discards it; progress once a second, as the agent reports it.
    async fn image2disk(
        &self,
        agent: &Agent<'_>,
        index: usize,
        attempt: u32,
        action: &ActionSpec,
    ) -> Result<(String, Leave), String> {
        let url = action
            .params
            .get("url")
            .ok_or("parameter \"url\" is missing")?;
        let want = action
            .params
            .get("sha256")
            .ok_or("parameter \"sha256\" is missing")?
            .to_ascii_lowercase();
        // As the agent: the disk about to be written, recorded before a byte goes to it.
        let write = serde_json::to_string(&DiskWrite {
            index,
            attempt,
            disk: crate::inventory::disk(&self.hostname),
        })
        .expect("disk writes serialize");
        agent
            .call("disk", |c, b| {
                c.post(format!("{b}/v1/agent/disk"))
                    .header("content-type", "application/json")
                    .body(write.clone())
            })
            .await
            .map_err(|e| format!("the server did not take the disk write: {e}"))?;
        let t0 = Instant::now();
        let progress = |done: u64, total: Option<u64>| {
            let rate_bps = (done as f64 / t0.elapsed().as_secs_f64().max(1e-3)) as u64;
            let kind = ReportKind::Progress(Progress {
                done,
                total,
                rate_bps,
            });
            agent.try_report(index, attempt, kind)
        };
        let (n, got) = discard(agent.http, url, Some(&progress))
            .await
            .map_err(|e| e.to_string())?;
        agent
            .rack
            .counters
            .image_bytes
            .fetch_add(n, Ordering::Relaxed);
        if got != want {
            return Err(format!("sha256 mismatch: expected {want}, got {got}"));
        }
        Ok((
            format!(
                "{n} bytes streamed, sha256 {got} verified, {:.1} s (simulated: bytes discarded)",
                t0.elapsed().as_secs_f64()
            ),
            Leave::Stay,
        ))
    }
}

/// One agent run's credential and clients.
struct Agent<'a> {
    rack: &'a Rack,
    api: &'a reqwest::Client,
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
}

impl Agent<'_> {
    async fn call(
        &self,
        what: &str,
        req: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<String, SimError> {
        call(self.rack, self.api, what, |c| {
            req(c, self.base).header("authorization", self.token)
        })
        .await
    }

    fn report_request(
        &self,
        index: usize,
        attempt: u32,
        kind: ReportKind,
    ) -> reqwest::RequestBuilder {
        let body = serde_json::to_string(&Report {
            index,
            attempt,
            kind,
        })
        .expect("reports serialize");
        self.api
            .post(format!("{}/v1/agent/report", self.base))
            .header("authorization", self.token)
            .header("content-type", "application/json")
            .body(body)
    }

    async fn report(&self, index: usize, attempt: u32, kind: ReportKind) -> Result<(), SimError> {
        let body = serde_json::to_string(&Report {
            index,
            attempt,
            kind,
        })
        .expect("reports serialize");
        self.call("report", |c, b| {
            c.post(format!("{b}/v1/agent/report"))
                .header("content-type", "application/json")
                .body(body.clone())
        })
        .await
        .map(drop)
    }

    /// One try, no retry: progress may be lost, as the agent's.
    async fn try_report(&self, index: usize, attempt: u32, kind: ReportKind) {
        let t0 = Instant::now();
        if self
            .report_request(index, attempt, kind)
            .send()
            .await
            .is_ok()
        {
            self.rack.samples.add(Measure::AgentCall, t0.elapsed());
        }
    }
}

/// An agent API call, retried (with backoff) while the server does not answer or answers
/// 5xx; each answered try is an agent-call latency sample.
async fn call(
    rack: &Rack,
    client: &reqwest::Client,
    what: &str,
    req: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<String, SimError> {
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..CALL_TRIES {
        let t0 = Instant::now();
        match req(client).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                rack.samples.add(Measure::AgentCall, t0.elapsed());
                if status < 300 {
                    return Ok(body);
                }
                if status < 500 {
                    return Err(SimError::Refused {
                        what: what.into(),
                        status,
                        body,
                    });
                }
                last = format!("{status} {body}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Err(SimError::Protocol(format!(
        "{what}: no answer after {CALL_TRIES} tries: {last}"
    )))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, SimError> {
    serde_json::from_str(text)
        .map_err(|e| SimError::Protocol(format!("unreadable {what} answer: {e}")))
}

async fn check(r: reqwest::Response, what: &str) -> Result<reqwest::Response, SimError> {
    let status = r.status().as_u16();
    if status < 300 {
        return Ok(r);
    }
    Err(SimError::Refused {
        what: what.into(),
        status,
        body: r.text().await.unwrap_or_default(),
    })
}

async fn get_text(http: &reqwest::Client, url: &str, what: &str) -> Result<String, SimError> {
    let r = http
        .get(url)
        .send()
        .await
        .map_err(|source| SimError::Http {
            what: what.into(),
            source,
        })?;
    check(r, what)
        .await?
        .text()
        .await
        .map_err(|source| SimError::Http {
            what: what.into(),
            source,
        })
}

type NoProgress = fn(u64, Option<u64>) -> std::future::Ready<()>;

/// GETs `url`, hashing and counting the bytes and dropping them; `progress` is called about
/// once a second. Returns the byte count and the sha256 (hex).
async fn discard<F, Fut>(
    http: &reqwest::Client,
    url: &str,
    progress: Option<&F>,
) -> Result<(u64, String), SimError>
where
    F: Fn(u64, Option<u64>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let r = http
        .get(url)
        .send()
        .await
        .map_err(|source| SimError::Http {
            what: format!("GET {url}"),
            source,
        })?;
    let mut r = check(r, url).await?;
    let total = r.content_length();
    let mut hash = Sha256::new();
    let mut n = 0u64;
    let mut last = Instant::now();
    while let Some(chunk) = r.chunk().await.map_err(|source| SimError::Http {
        what: format!("reading {url}"),
        source,
    })? {
        hash.update(&chunk);
        n += chunk.len() as u64;
        if let Some(p) = progress
            && last.elapsed() >= Duration::from_secs(1)
        {
            last = Instant::now();
            p(n, total).await;
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n, hex))
}
