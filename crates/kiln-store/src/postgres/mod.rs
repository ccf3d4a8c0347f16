//! The shared backend: PostgreSQL, for several servers on one state. Same semantics as the
//! SQLite backend; the database does the locking (`SELECT … FOR UPDATE` on a workflow row, a
//! partial unique index for "one unfinished workflow per machine").
//!
//! The client is the synchronous `postgres` crate: it drives its own runtime and panics on a
//! tokio worker thread, so every call must come from the blocking pool ([`crate::StoreHandle`]).
//! TLS when the URL asks for it (`sslmode=require|verify-ca|verify-full`, see [`tls`]).

mod discovery;
mod hardware;
mod inventory;
pub(crate) mod listen;
mod other;
mod schema;
pub(crate) mod tls;
pub(crate) mod workflows;

use std::cell::Cell;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use postgres::config::Host;
use postgres::{Client, Config, NoTls};

use crate::StoreError;

/// Connections one store opens at most. Callers on several blocking threads (agent calls,
/// BMC jobs, the admin API) then run their transactions side by side, as PostgreSQL is
/// built for, instead of queueing behind one connection; a thousand machines reporting at
/// once showed that queue as seconds of latency. Opened as needed.
const CONNECTIONS: usize = 8;

thread_local! {
    /// Set while a COMMIT is on its way in this thread's call: a connection lost then leaves
    /// the outcome unknown, so the call is not repeated (it could apply twice). Per thread:
    /// a call runs on one thread, holding one connection, from start to end.
    static COMMITTING: Cell<bool> = const { Cell::new(false) };
}

/// Kiln's state in a PostgreSQL database: up to [`CONNECTIONS`] connections, each used by one
/// call at a time (callers use the blocking pool); a connection is reopened once per call when
/// PostgreSQL closed it (a restart).
pub struct PgStore {
    connections: Vec<Mutex<Option<Client>>>,
    /// Where the search for a free connection starts (turns, so none is always passed over).
    next: AtomicUsize,
    config: Config,
    tls: Option<tls::RustlsConnect>,
    /// What `describe` shows: the URL without its password.
    shown: String,
    /// Commits may be acknowledged before they reach disk (`synchronous_commit = off`).
    relaxed: AtomicBool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`, or the key=value form) and migrates the
    /// schema. Errors never show the password.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let (config, tls) = parse_url(url)?;
        let shown = describe(&config);
        let store = PgStore {
            connections: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            config,
            tls,
            shown,
            relaxed: AtomicBool::new(false),
        };
        store.with(schema::migrate)?;
        Ok(store)
    }

    /// For a connection that only writes events (and reads): commits are acknowledged before
    /// PostgreSQL flushes them, so the last ones may be lost to a crash of PostgreSQL itself.
    pub fn relax_durability(&self) -> Result<(), StoreError> {
        self.relaxed.store(true, Ordering::SeqCst);
        // Connections opened from now on set it themselves (see `connect`).
        for slot in &self.connections {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(client) = guard.as_mut() {
                client.batch_execute("SET synchronous_commit = off")?;
            }
        }
        Ok(())
    }

    /// A connection slot for one call: a free open connection if there is one, else a free
    /// unopened slot, else (all busy) the next one in turn, waiting for it.
    fn slot(&self) -> MutexGuard<'_, Option<Client>> {
        let n = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut unopened = None;
        for i in 0..n {
            let guard = match self.connections[(start + i) % n].try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            if guard.is_some() {
                return guard;
            }
            if unopened.is_none() {
                unopened = Some(guard);
            }
        }
        unopened.unwrap_or_else(|| {
            self.connections[start % n]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        })
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let mut client = connect_with(&self.config, self.tls.as_ref())?;
        if self.relaxed.load(Ordering::SeqCst) {
            client.batch_execute("SET synchronous_commit = off")?;
        }
        Ok(client)
    }

    /// Runs `f` on the connection, (re)connecting first if needed. When the connection turns
    /// out to be closed (PostgreSQL restarted) before `f` could commit, `f` runs once more on a
    /// new one: it had changed nothing, its transaction died with the connection.
    pub(crate) fn with<R>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self.slot();
        let mut retried = false;
        loop {
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(self.connect()?);
            }
            let client = guard.as_mut().expect("connected above");
            COMMITTING.set(false);
            match f(client) {
                Err(StoreError::Postgres(e))
                    if !retried && (e.is_closed() || client.is_closed()) && !COMMITTING.get() =>
                {
                    retried = true;
                    *guard = None;
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in a transaction and commits it (see [`PgStore::with`]): even a one-statement
    /// write goes through BEGIN, so a connection found dead is found so before anything is sent.
    fn write<R>(
        &self,
        f: impl FnMut(&mut postgres::Transaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.transaction(workflows::EventsLock::Shared, f)
    }

    /// Runs the read `f` holding the events lock alone: every write transaction that began
    /// before has ended, so no event with a smaller id than those `f` sees can commit later
    /// (see [`workflows::insert_event`]). New writers wait only for `f`.
    fn read_events<R>(
        &self,
        f: impl FnMut(&mut postgres::Transaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.transaction(workflows::EventsLock::Alone, f)
    }

    /// Runs `f` in a transaction that takes the events lock first (before any row lock), and
    /// commits it.
    fn transaction<R>(
        &self,
        lock: workflows::EventsLock,
        mut f: impl FnMut(&mut postgres::Transaction<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            workflows::take_events_lock(&mut tx, lock)?;
            let out = f(&mut tx)?;
            self.commit(tx)?;
            Ok(out)
        })
    }

    /// Commits `tx`, marking the commit in flight for [`PgStore::with`].
    fn commit(&self, tx: postgres::Transaction<'_>) -> Result<(), StoreError> {
        COMMITTING.set(true);
        tx.commit()?;
        Ok(())
    }
}

impl Drop for PgStore {
    /// The client closes its connection by blocking on its own runtime, which panics on a tokio
    /// worker thread (where the last handle on a store may well be dropped): close it on a
    /// thread of its own.
    fn drop(&mut self) {
        let clients: Vec<Client> = self
            .connections
            .iter_mut()
            .filter_map(|slot| slot.get_mut().unwrap_or_else(|e| e.into_inner()).take())
            .collect();
        if !clients.is_empty() {
            let _ = std::thread::Builder::new()
                .name("kiln-pg-close".into())
                .spawn(move || drop(clients));
        }
    }
}

/// The connection settings and the TLS connector (when the URL asks for TLS) of `url`.
pub(crate) fn parse_url(url: &str) -> Result<(Config, Option<tls::RustlsConnect>), StoreError> {
    let (plain, wanted) = tls::split_url(url);
    let config = Config::from_str(&plain)
        .map_err(|e| StoreError::Invalid(format!("store URL {}: {e}", redacted(url))))?;
    Ok((config, tls::connector(&wanted)?))
}

/// A new connection as `config` says, over TLS when `tls` is given.
pub(crate) fn connect_with(
    config: &Config,
    tls: Option<&tls::RustlsConnect>,
) -> Result<Client, StoreError> {
    Ok(match tls {
        Some(tls) => config.connect(tls.clone())?,
        None => config.connect(NoTls)?,
    })
}

/// What went wrong, with PostgreSQL's own message (`db error` alone says nothing); a
/// connection's errors never hold its password.
pub(crate) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                out.push_str(&format!(": {s}"));
                source = s.source();
            }
            out
        }
    }
}

/// `postgres://user@host:port/db` from a parsed config: never the password.
fn describe(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or("");
    let port = config.get_ports().first().copied();
    match config.get_hosts().first() {
        Some(Host::Tcp(h)) => match port {
            Some(p) => format!("postgres://{user}@{h}:{p}/{db}"),
            None => format!("postgres://{user}@{h}/{db}"),
        },
        Some(Host::Unix(dir)) => {
            let port = port.map(|p| format!("&port={p}")).unwrap_or_default();
            format!("postgres://{user}@/{db}?host={}{port}", dir.display())
        }
        None => format!("postgres://{user}@/{db}"),
    }
}

/// `url` with any password replaced by `***` (for an error about a URL that did not parse).
pub fn redacted(url: &str) -> String {
    let mut out = url.to_string();
    // URL form: scheme://user:password@host…
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?'])
            .map(|i| rest + i)
            .unwrap_or(out.len());
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
            && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    // `password=…` as a query parameter or a key=value pair.
    let mut from = 0;
    while let Some(i) = out[from..].find("password=").map(|i| from + i) {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map(|j| start + j)
            .unwrap_or(out.len());
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

impl crate::SettingStore for PgStore {
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = $2",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt("SELECT value FROM settings WHERE key = $1", &[&key])?
                    .map(|r| r.get(0)),
            )
        })
    }

    /// A counter that triggers bump in every transaction touching hardware or workflows
    /// (visible when that transaction commits), so a server notices others' changes.
    fn data_version(&self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.query_one("SELECT version FROM data_version", &[])?.get(0)))
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_every_url_form() {
        assert_eq!(
            redacted("postgres://kiln:s3cret@db.example:5432/kiln"),
            "postgres://kiln:***@db.example:5432/kiln"
        );
        assert_eq!(
            redacted("postgresql://kiln@/kiln?host=/run/pg&password=s3cret&port=1"),
            "postgresql://kiln@/kiln?host=/run/pg&password=***&port=1"
        );
        assert_eq!(
            redacted("host=/run/pg user=kiln password=s3cret dbname=kiln"),
            "host=/run/pg user=kiln password=*** dbname=kiln"
        );
        assert_eq!(redacted("postgres://kiln@h/db"), "postgres://kiln@h/db");
    }

    #[test]
    fn describe_never_shows_the_password() {
        let c = Config::from_str("postgres://kiln:s3cret@db.example:5433/prod").unwrap();
        assert_eq!(describe(&c), "postgres://kiln@db.example:5433/prod");
        let c = Config::from_str("postgresql://kiln:s3cret@/prod?host=/run/pg").unwrap();
        assert_eq!(describe(&c), "postgres://kiln@/prod?host=/run/pg");
    }
}
