//! The rack's `kiln serve` processes. The first sits on kiln-lab's bridge (br0, 10.77.0.1).
//! With two servers, the second runs in a namespace of its own whose veth is another port of
//! the same bridge (10.77.0.3): an HA pair on one segment sharing one PostgreSQL. Both offer
//! every machine; a machine boots from the first offer it hears and talks to that server from
//! then on (script, boot files, agent API), so the machines split between the two.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

/// The second server's address on the rack's segment.
pub const SECOND_SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// Where the machines are (the second server routes them through its veth).
const MACHINE_NET: &str = "10.77.0.0/16";

/// A running `kiln serve`.
#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub address: Ipv4Addr,
    pub pid: u32,
    pub log: PathBuf,
}

/// One server's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFigures {
    pub id: String,
    pub address: Ipv4Addr,
    pub pid: u32,
    pub cpu_seconds: f64,
    pub max_rss_mib: f64,
    /// iPXE netboots that took this server's offer.
    pub netboots: u64,
}

/// Where a server runs: its namespace, provisioning interface, address and data directory.
pub struct Place<'a> {
    pub ns: &'a str,
    pub interface: &'a str,
    pub address: Ipv4Addr,
    pub data: &'a Path,
}

/// A namespace this module made, deleted on drop (its processes are the lab's: stopped at
/// teardown).
pub struct ServerNamespace(pub String);

impl Drop for ServerNamespace {
    fn drop(&mut self) {
        if let Err(e) = kiln_lab::run(Command::new("ip").args(["netns", "del", &self.0])) {
            eprintln!("kiln-rack: {e:#}");
        }
    }
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    kiln_lab::run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// The second server's namespace: `srv2` holds [`SECOND_SERVER_IP`] and routes the machines'
/// /16; its peer `srv2p` is a port of br0 in `lab_ns`.
pub fn wire_second(lab_ns: &str) -> anyhow::Result<ServerNamespace> {
    let ns = format!("kiln-srv2-{}", std::process::id());
    kiln_lab::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let guard = ServerNamespace(ns.clone());
    ip(&ns, &["link", "set", "lo", "up"])?;
    ip(
        lab_ns,
        &[
            "link", "add", "srv2p", "type", "veth", "peer", "name", "srv2", "netns", &ns,
        ],
    )?;
    ip(lab_ns, &["link", "set", "srv2p", "master", "br0"])?;
    ip(lab_ns, &["link", "set", "srv2p", "up"])?;
    ip(&ns, &["link", "set", "srv2", "up"])?;
    let address = SECOND_SERVER_IP.to_string();
    ip(
        &ns,
        &["addr", "add", &format!("{address}/24"), "dev", "srv2"],
    )?;
    ip(
        &ns,
        &["route", "add", MACHINE_NET, "dev", "srv2", "src", &address],
    )?;
    crate::rack::grow_neighbour_table(&ns);
    Ok(guard)
}

/// Starts `kiln serve` number `index` (0-based) at `place`, serving boot files from
/// `artifacts`, and waits for its admin API (its `api.json`).
pub fn start(
    lab: &mut kiln_lab::Lab,
    opts: &crate::rack::Options,
    index: usize,
    place: &Place<'_>,
    artifacts: &Path,
) -> anyhow::Result<Server> {
    let id = format!("kiln-{}", index + 1);
    let log = lab.log(&format!("kiln-serve-{}.log", index + 1));
    let (data_s, artifacts_s) = (place.data.to_string_lossy(), artifacts.to_string_lossy());
    let (address, http_port) = (place.address.to_string(), kiln_lab::HTTP_PORT.to_string());
    let mut serve: Vec<&str> = vec![
        "serve",
        "--data-dir",
        &data_s,
        "--interface",
        place.interface,
        "--address",
        &address,
        "--http-port",
        &http_port,
        "--tftp-root",
        &artifacts_s,
        "--artifacts",
        &artifacts_s,
    ];
    if opts.servers > 1 {
        serve.extend(["--server-id", &id]);
    }
    serve.extend(opts.serve_args.iter().map(String::as_str));
    let what = format!("kiln serve {id}");
    let pid = lab.spawn_in(place.ns, &what, &opts.kiln, &serve, &log)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !place.data.join("api.json").exists() {
        if let Some(why) = lab.exited() {
            bail!("{why}; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}'s admin API did not come up in 60 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Server {
        id,
        address: place.address,
        pid,
        log,
    })
}

/// Each server's CPU, peak RSS and netboots (read while it still runs).
pub fn figures(
    servers: &[Server],
    netboots: &std::collections::BTreeMap<Ipv4Addr, u64>,
) -> Vec<ServerFigures> {
    servers
        .iter()
        .map(|s| {
            let (cpu_seconds, max_rss_mib) = crate::rack::proc_usage(s.pid);
            ServerFigures {
                id: s.id.clone(),
                address: s.address,
                pid: s.pid,
                cpu_seconds,
                max_rss_mib,
                netboots: netboots.get(&s.address).copied().unwrap_or(0),
            }
        })
        .collect()
}
