//! Kiln's durable state behind one trait, [`Store`]: every acknowledged change is committed
//! before the call returns, so it survives `kill -9`. The embedded backend is SQLite in the
//! data directory ([`SqliteStore`]); the shared one is PostgreSQL ([`PgStore`]), for several
//! servers on one state. Async code holds a [`StoreHandle`].

pub mod discovery;
mod enrolment;
mod handle;
mod postgres;
mod records;
mod sqlite;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod traits;

use std::path::PathBuf;
use std::sync::Arc;

pub use handle::StoreHandle;
pub use postgres::PgStore;
pub use postgres::listen::ChangeWatch;
/// A store URL with any password replaced by `***`, for output.
pub use postgres::redacted as redacted_url;
pub use records::{
    ActionLog, ApiTokenRecord, ClusterNode, ClusterRecord, Conflict, EnrollSummary, EventRecord,
    ImageRecord, InventoryRecord, MAX_EVENTS_PER_MACHINE, MAX_LOG_LINE_BYTES, MAX_LOG_LINES,
    PhoneHome, ServerRecord, WorkflowKey,
};
pub use sqlite::SqliteStore;
pub use traits::{
    BmcHintStore, Change, ClusterStore, DiscoveryStore, EventStore, HardwareStore, ImageStore,
    InventoryStore, ServerStore, SettingStore, Store, TokenStore, WorkflowStore, WorkflowTx,
};

/// File name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "kiln.db";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// I/O on the data directory.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (its message never holds the connection's password).
    #[error("database: {}", postgres::message(.0))]
    Postgres(#[from] ::postgres::Error),
    /// A stored record could not be read back.
    #[error("database holds an unreadable record for {what}: {why}")]
    Corrupt { what: String, why: String },
    /// Enrolment clashes with machines already stored; nothing was changed.
    #[error("{} conflict(s) with enrolled machines", .0.len())]
    Conflicts(Vec<Conflict>),
    /// The named machine is not enrolled.
    #[error("no machine named {0:?} is enrolled")]
    NotFound(String),
    /// The machine already has a workflow that has not ended.
    #[error("{hardware} already has an unfinished workflow ({id})")]
    Busy { hardware: String, id: String },
    /// A change the store refuses, with the reason.
    #[error("{0}")]
    Invalid(String),
    /// No workflow matches (unknown id, or a token that is not, or no longer, valid).
    #[error("no such workflow")]
    NoWorkflow,
    /// A blocking store call could not run (its thread panicked or the runtime is stopping).
    #[error("store call did not complete: {0}")]
    Interrupted(String),
    /// The database was written by a newer kiln.
    #[error(
        "the database schema is version {found}, newer than this kiln understands ({supported})"
    )]
    TooNew { found: i64, supported: i64 },
}

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// `kiln.db` in the data directory (the default: one server).
    Sqlite { data_dir: PathBuf },
    /// A PostgreSQL database (`postgres://user@host/db`): several servers may share it.
    Postgres { url: String },
}

impl Location {
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> Self {
        Location::Sqlite {
            data_dir: data_dir.into(),
        }
    }

    /// The store a `--store` value names: a `postgres://` or `postgresql://` URL, or
    /// `sqlite` (the data directory's `kiln.db`, the default).
    pub fn parse(value: &str, data_dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            Ok(Location::Postgres {
                url: value.to_string(),
            })
        } else if value == "sqlite" {
            Ok(Location::sqlite(data_dir))
        } else {
            Err(StoreError::Invalid(format!(
                "store {}: expected `sqlite` or a postgres://user@host/db URL",
                postgres::redacted(value)
            )))
        }
    }

    /// Where the state lives, for logs: never a password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite { data_dir } => format!("sqlite:{}", data_dir.join(DB_FILE).display()),
            Location::Postgres { url } => postgres::redacted(url),
        }
    }
}

impl std::fmt::Debug for Location {
    /// Without the password a PostgreSQL URL may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How hard a connection holds on to what it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A commit is on disk when it returns: enrolment, workflows, tokens.
    Full,
    /// For a connection that only writes events (and reads): commits survive a crash of kiln
    /// but the last ones may be lost to a power cut, and no fsync sits on the event path.
    Relaxed,
}

/// Opens a connection to the store at `location` (creating and migrating it if needed).
pub fn open(location: &Location, durability: Durability) -> Result<Arc<dyn Store>, StoreError> {
    match location {
        Location::Sqlite { data_dir } => {
            let store = SqliteStore::open(data_dir)?;
            if durability == Durability::Relaxed {
                store.relax_durability()?;
            }
            Ok(Arc::new(store))
        }
        Location::Postgres { url } => {
            let store = PgStore::open(url)?;
            if durability == Durability::Relaxed {
                store.relax_durability()?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// Calls `on_change` whenever another server commits a change to hardware or workflows
/// (PostgreSQL: LISTEN/NOTIFY on a connection of its own, reconnecting), until the returned
/// guard is dropped. `None` for SQLite, which has no such signal: poll [`SettingStore::data_version`].
pub fn watch_changes(
    location: &Location,
    on_change: impl Fn() + Send + 'static,
) -> Result<Option<ChangeWatch>, StoreError> {
    match location {
        Location::Sqlite { .. } => Ok(None),
        Location::Postgres { url } => {
            let (config, tls) = postgres::parse_url(url)?;
            let connect = move || postgres::connect_with(&config, tls.as_ref());
            Ok(Some(postgres::listen::watch(connect, on_change)))
        }
    }
}

/// Opens the SQLite store in `data_dir` (created 0700, the database 0600), fully durable.
pub fn open_sqlite(data_dir: &std::path::Path) -> Result<Arc<dyn Store>, StoreError> {
    open(&Location::sqlite(data_dir), Durability::Full)
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn a_store_value_names_sqlite_or_a_postgres_url_and_never_shows_a_password() {
        assert_eq!(
            Location::parse("sqlite", "/d").unwrap(),
            Location::sqlite("/d")
        );
        let url = "postgresql://kiln:pw-123@db/kiln";
        let pg = Location::parse(url, "/d").unwrap();
        assert_eq!(pg, Location::Postgres { url: url.into() });
        assert_eq!(format!("{pg:?}"), "postgresql://kiln:***@db/kiln");
        let err = Location::parse("mysql://kiln:pw-123@db/kiln", "/d").unwrap_err();
        assert!(!err.to_string().contains("pw-123"), "{err}");
        // A URL that does not parse: the error does not echo the password either.
        let err = PgStore::open("postgres://kiln:pw-123@db:notaport/kiln")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("pw-123"), "{err}");
    }
}
