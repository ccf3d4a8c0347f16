//! What only a server database shows: a restart of PostgreSQL under a running store, and a
//! writer killed with SIGKILL mid-stream.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kiln_model::{Event, EventKind};

use super::cases::workflow;
use crate::testing::{PgCluster, skip_pg};
use crate::{Durability, Location, WorkflowKey};

fn own_cluster() -> Option<PgCluster> {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return None;
    }
    Some(PgCluster::start().unwrap_or_else(|e| panic!("{e}")))
}

/// PostgreSQL restarted between two calls (issue 13, 3c): the next call reconnects and
/// succeeds, and what was committed before is all there.
#[test]
fn a_restart_of_postgres_between_two_calls_loses_nothing() {
    let Some(cluster) = own_cluster() else { return };
    let url = cluster.create_database().unwrap();
    let location = Location::Postgres { url };
    let store = crate::open(&location, Durability::Full).unwrap();
    let events = crate::open(&location, Durability::Relaxed).unwrap();
    store
        .enroll(&super::cases::workflow_machine("a", 1))
        .unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    events
        .append_events(&[Event::now(EventKind::WorkflowCreated, "w1").with_machine("a")])
        .unwrap();
    let v0 = store.data_version().unwrap();

    cluster.restart().unwrap();

    // A write first (its connection is dead: it must reconnect, not fail or half-apply).
    store
        .with_workflow(WorkflowKey::Id("w1"), |wf, tx| {
            wf.log_lines_dropped += 1;
            tx.set_netboot("a", true)
        })
        .unwrap();
    assert_ne!(store.data_version().unwrap(), v0);
    events
        .append_events(&[Event::now(EventKind::BmcDone, "after restart").with_machine("a")])
        .unwrap();
    let wf = store.workflow("w1").unwrap().unwrap();
    assert_eq!(wf.log_lines_dropped, 1, "applied once");
    assert!(store.hardware_by_name("a").unwrap().unwrap().netboot);
    assert_eq!(events.events(Some("a"), 0, 10).unwrap().len(), 2);

    // A read first, after another restart.
    cluster.restart().unwrap();
    assert_eq!(store.hardware().unwrap().len(), 1);
}

/// Env var naming the database [`crash_writer`] writes to.
const CRASH_URL: &str = "KILN_TEST_CRASH_URL";

/// The child of [`acknowledged_changes_survive_sigkill_of_the_writer`]: commits workflows
/// (with an event each) one by one and prints `ack N` after each commit returned.
#[test]
#[ignore = "run as a child process by acknowledged_changes_survive_sigkill_of_the_writer"]
fn crash_writer() {
    let url = std::env::var(CRASH_URL).expect("run by the crash test");
    let store = crate::open(&Location::Postgres { url }, Durability::Full).unwrap();
    for i in 0.. {
        let wf = workflow(&format!("w{i}"), &format!("m{i}"));
        store
            .create_workflows(&[wf], &mut |wf, tx| {
                tx.event(&Event::now(EventKind::WorkflowCreated, &wf.id).with_machine(&wf.hardware))
            })
            .unwrap();
        println!("ack {i}");
    }
}

/// An acknowledged change survives `kill -9` of the process that made it (issue 13, point 1).
#[test]
fn acknowledged_changes_survive_sigkill_of_the_writer() {
    let Some(cluster) = own_cluster() else { return };
    let url = cluster.create_database().unwrap();
    // Migrated before the child starts, so the kill lands among the workflow commits.
    let store = crate::open(&Location::Postgres { url: url.clone() }, Durability::Full).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::postgres_only::crash_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_URL, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 40 {
        let line = lines
            .next()
            .expect("the writer stopped before 40 commits")
            .unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream: the writer is committing the next one.
    child.wait().unwrap();
    // Whatever it printed before it died was acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse().unwrap());
        }
    }
    for i in &acked {
        let wf = store
            .workflow(&format!("w{i}"))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged workflow w{i} lost"));
        assert_eq!(wf.hardware, format!("m{i}"));
        assert_eq!(
            store.events(Some(&format!("m{i}")), 0, 10).unwrap().len(),
            1,
            "w{i}'s event"
        );
    }
    // Nothing half-applied: every stored workflow has its event.
    for wf in store.workflows(false).unwrap() {
        assert_eq!(
            store.events(Some(&wf.hardware), 0, 10).unwrap().len(),
            1,
            "{}",
            wf.id
        );
    }
}

/// Servers starting at once on a new database migrate it once (the advisory lock), and a
/// database of a newer schema is refused.
#[test]
fn servers_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let (_cluster, url) = crate::testing::fresh_database();
    let location = Location::Postgres { url: url.clone() };
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| crate::open(&location, Durability::Full).map(|_| ())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute("UPDATE schema_version SET version = version + 1")
        .unwrap();
    assert!(matches!(
        crate::open(&location, Durability::Full).err(),
        Some(crate::StoreError::TooNew { .. })
    ));
}

/// Event ids never show out of commit order across servers (issue 13, point 2): writers run
/// side by side, so one server's event may commit while another's, with a smaller id, is still
/// uncommitted; a reader then waits for that transaction, so one following `events?after=ID`
/// never sees a larger id before a smaller one has committed.
#[test]
fn a_reader_never_sees_a_larger_event_id_before_a_smaller_one_commits() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let (_cluster, url) = crate::testing::fresh_database();
    let location = Location::Postgres { url: url.clone() };
    let other = crate::open(&location, Durability::Full).unwrap(); // migrates
    let mut first = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = first.transaction().unwrap();
    let early = Event::now(EventKind::BmcDone, "first").with_machine("a");
    crate::postgres::workflows::insert_event(&mut tx, &early).unwrap();
    // Another server's event commits meanwhile: writers do not wait for each other.
    let late = Event::now(EventKind::BmcDone, "second").with_machine("b");
    other.append_events(&[late]).unwrap();
    // A reader waits for the first transaction instead of showing the second event alone.
    let reader = std::thread::spawn({
        let location = location.clone();
        move || {
            let reader = crate::open(&location, Durability::Full).unwrap();
            (
                reader.last_event_id().unwrap(),
                reader.events(None, 0, 10).unwrap(),
            )
        }
    });
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut waiting = || -> i64 {
        watch
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let mut waited = false;
    for _ in 0..500 {
        assert!(
            !reader.is_finished(),
            "the reader did not wait for the open transaction"
        );
        if waiting() > 0 {
            waited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(waited, "the reader never waited on the events lock");
    tx.commit().unwrap();
    let (last, all) = reader.join().unwrap();
    let machines: Vec<_> = all.iter().map(|e| e.event.machine.as_deref()).collect();
    assert_eq!(machines, [Some("a"), Some("b")]);
    assert!(all[0].id < all[1].id);
    assert_eq!(last, all[1].id);
}

/// A claim skips a workflow another server's transaction holds (`FOR UPDATE SKIP LOCKED`)
/// instead of waiting for it, and takes it once it is free.
#[test]
fn a_claim_skips_a_workflow_another_server_holds() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let (_cluster, url) = crate::testing::fresh_database();
    let store = crate::open(&Location::Postgres { url: url.clone() }, Durability::Full).unwrap();
    store
        .enroll(&super::cases::workflow_machine("a", 1))
        .unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut held = other.transaction().unwrap();
    held.query("SELECT id FROM workflows WHERE id = 'w1' FOR UPDATE", &[])
        .unwrap();
    let claim = |store: &std::sync::Arc<dyn crate::Store>| {
        store.with_workflow(WorkflowKey::IdUnlessLocked("w1"), |wf, _| {
            wf.log_lines_dropped += 1;
            Ok(())
        })
    };
    assert!(matches!(claim(&store), Err(crate::StoreError::NoWorkflow)));
    held.commit().unwrap();
    claim(&store).unwrap();
    assert_eq!(store.workflow("w1").unwrap().unwrap().log_lines_dropped, 1);
}

/// One store serves several callers at once: a read does not wait behind another caller's
/// open transaction (a thousand agents reporting must not queue on one connection).
#[test]
fn a_read_does_not_wait_for_another_callers_transaction() {
    if skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let (_cluster, url) = crate::testing::fresh_database();
    let store = crate::open(&Location::Postgres { url }, Durability::Full).unwrap();
    store
        .enroll(&super::cases::workflow_machine("a", 1))
        .unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    let (inside_tx, inside) = std::sync::mpsc::channel();
    let (read_tx, read) = std::sync::mpsc::channel();
    let writer = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            store.with_workflow(WorkflowKey::Id("w1"), |wf, _| {
                inside_tx.send(()).unwrap();
                // Holds its connection (and the row) until the reader is done, or gives up.
                let read_meanwhile = read.recv_timeout(std::time::Duration::from_secs(30));
                wf.log_lines_dropped += 1;
                Ok(read_meanwhile.is_ok())
            })
        })
    };
    inside.recv().unwrap();
    assert_eq!(store.hardware().unwrap().len(), 1);
    // (Should the writer have given up waiting, it is gone: the assertion below says so.)
    let _ = read_tx.send(());
    assert!(
        writer.join().unwrap().unwrap(),
        "the read waited for the writer's transaction"
    );
    assert_eq!(store.workflow("w1").unwrap().unwrap().log_lines_dropped, 1);
}

/// A change committed through one connection reaches a watcher on another at once (LISTEN /
/// NOTIFY), and the watcher calls once on (re)connecting, for what it may have missed.
#[test]
fn changes_committed_elsewhere_are_notified_and_a_restart_is_survived() {
    let Some(cluster) = own_cluster() else { return };
    let url = cluster.create_database().unwrap();
    let location = Location::Postgres { url };
    let store = crate::open(&location, Durability::Full).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = crate::watch_changes(&location, move || {
        let _ = tx.send(());
    })
    .unwrap()
    .expect("PostgreSQL has a watcher");
    let wait = std::time::Duration::from_secs(30);
    rx.recv_timeout(wait).expect("a call on connecting");
    store
        .enroll(&super::cases::workflow_machine("a", 1))
        .unwrap();
    rx.recv_timeout(wait).expect("notified of the enrolment");
    // Events alone change nothing the inventory holds: no call.
    store
        .append_events(&[Event::now(EventKind::BmcDone, "x").with_machine("a")])
        .unwrap();
    cluster.restart().unwrap();
    rx.recv_timeout(wait).expect("a call on reconnecting");
    store.set_netboot("a", true).unwrap();
    rx.recv_timeout(wait).expect("notified after the restart");
    drop(watch);
    assert!(
        crate::watch_changes(&Location::sqlite("/nonexistent"), || {})
            .unwrap()
            .is_none()
    );
}

/// A CA and a server certificate it signed for `names` (PEM): (CA, certificate, key).
fn certificates(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// TLS to PostgreSQL when the URL asks (issue 13, point 2): `require` encrypts, `verify-full`
/// checks the CA and the name, `verify-ca` the CA alone; a wrong CA or name is refused.
#[test]
fn tls_is_used_when_the_url_asks_and_the_certificate_checked_as_asked() {
    let Some(cluster) = own_cluster() else { return };
    let (ca, cert, key) = certificates(&["127.0.0.1", "db.kiln.test"]);
    let port = cluster.serve_tls(&cert, &key).unwrap();
    cluster.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (other_ca, _, _) = certificates(&["127.0.0.1"]);
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, &other_ca).unwrap();
    let url = |host: &str, mode: &str, root: &std::path::Path| {
        format!(
            "postgres://kiln@{host}:{port}/kiln_0?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };
    let encrypted = |url: String| -> Result<bool, String> {
        let store = crate::PgStore::open(&url).map_err(|e| e.to_string())?;
        store
            .with(|c| {
                Ok(c.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?
                .get(0))
            })
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        encrypted(url("127.0.0.1", "require", &other_ca_file)),
        Ok(true)
    );
    assert_eq!(
        encrypted(url("127.0.0.1", "verify-full", &ca_file)),
        Ok(true)
    );
    let e = encrypted(url("127.0.0.1", "verify-full", &other_ca_file)).unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The name is not the certificate's (localhost): only verify-ca accepts it.
    assert_eq!(encrypted(url("localhost", "verify-ca", &ca_file)), Ok(true));
    let e = encrypted(url("localhost", "verify-full", &ca_file)).unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // Without sslmode, over TCP: no TLS (as before).
    let plain = format!("postgres://kiln@127.0.0.1:{port}/kiln_0");
    assert_eq!(encrypted(plain), Ok(false));
}
