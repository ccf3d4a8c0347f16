//! A throwaway PostgreSQL cluster for tests: its own `initdb` in a temp directory, listening
//! only on a unix socket there, stopped and removed on drop. No system service is touched.
//! As root (CI), the cluster runs as `nobody` (`initdb` refuses root).
//!
//! Where the binaries are missing, [`PgCluster::start`] fails with what to install, unless
//! `KILN_SKIP_PG=1` ([`skip_pg`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Port of the socket file (`.s.PGSQL.<port>` in the cluster's directory; no TCP).
const PORT: u16 = 5432;

/// Whether the PostgreSQL tests are to be skipped (`KILN_SKIP_PG=1`).
pub fn skip_pg() -> bool {
    std::env::var("KILN_SKIP_PG").is_ok_and(|v| v == "1")
}

/// A running cluster of our own.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// `nobody` when we are root.
    run_as: Option<&'static str>,
    next_db: AtomicU32,
    /// The socket's port; also a TCP port on 127.0.0.1 once [`PgCluster::serve_tls`] ran.
    port: AtomicU16,
}

/// The directory with `initdb` and `pg_ctl`: Debian's newest /usr/lib/postgresql/<ver>/bin,
/// else `$KILN_PG_BIN`, else whatever is on the PATH.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("KILN_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    Err(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
         `apt-get install postgresql` (CI does, .ci/packages.sh), or set KILN_SKIP_PG=1 \
         to skip the PostgreSQL tests"
            .into(),
    )
}

fn am_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PgCluster {
    /// Creates and starts a cluster with a superuser `kiln` (trust auth on its socket).
    pub fn start() -> Result<PgCluster, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = find_bin()?;
        let dir = std::env::temp_dir().join(format!(
            "kiln-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let run_as = am_root().then_some("nobody");
        if let Some(user) = run_as {
            let ok = Command::new("chown")
                .arg(user)
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("chown {user} {} failed", dir.display()));
            }
        }
        let cluster = PgCluster {
            dir,
            bin,
            run_as,
            next_db: AtomicU32::new(0),
            port: AtomicU16::new(PORT),
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "kiln".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--no-locale".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        cluster.pg_ctl(&["-w", "start"])?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the socket (and the cluster).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` of this cluster.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://kiln@/{db}?host={}&port={}",
            self.dir.display(),
            self.port()
        )
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("kiln_{}", self.next_db.fetch_add(1, Ordering::SeqCst));
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(self.url(&name))
    }

    fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// Turns on TLS with the server certificate and key given (PEM) and listens on a free TCP
    /// port of 127.0.0.1 as well (TLS is never used on the socket); the port.
    pub fn serve_tls(&self, cert_pem: &str, key_pem: &str) -> Result<u16, String> {
        let data = self.data_dir();
        let write = |name: &str, text: &str| -> Result<(), String> {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&path, mode)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(user) = self.run_as {
                let ok = Command::new("chown").arg(user).arg(&path).status();
                if !ok.is_ok_and(|s| s.success()) {
                    return Err(format!("chown {user} {} failed", path.display()));
                }
            }
            Ok(())
        };
        write("server.crt", cert_pem)?;
        write("server.key", key_pem)?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        self.port.store(port, Ordering::SeqCst);
        self.restart()?;
        Ok(port)
    }

    /// `pg_ctl restart -m fast`: every connection is closed; the cluster is back when it returns.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["-w", "-m", "fast", "restart"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("postgres.log");
        let port = self.port();
        // TCP only once TLS is on (a port picked free), else the socket alone.
        let listen = if port == PORT { "" } else { "127.0.0.1" };
        let opts = format!(
            "-k {} -c listen_addresses='{listen}' -p {port}",
            self.dir.display()
        );
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
        ];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &all)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // The cluster's directory, not ours: `nobody` may not enter the current one.
        cmd.args(args).current_dir(&self.dir);
        let out = cmd
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            return Err(format!(
                "{tool} {:?} failed: {}{}\n{log}",
                args,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cluster shared by the tests running at the same time (each takes its own database); it
/// stops when the last of them drops its handle.
pub fn shared_cluster() -> Result<Arc<PgCluster>, String> {
    static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.upgrade() {
        return Ok(c);
    }
    let c = Arc::new(PgCluster::start()?);
    *shared = Arc::downgrade(&c);
    Ok(c)
}

/// A fresh database in the shared cluster: the handle that keeps the cluster up, and its URL.
/// Panics with what to install when PostgreSQL is missing (check [`skip_pg`] first).
pub fn fresh_database() -> (Arc<PgCluster>, String) {
    let cluster = shared_cluster().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database().unwrap_or_else(|e| panic!("{e}"));
    (cluster, url)
}
