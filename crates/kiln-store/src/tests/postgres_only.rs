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
