//! The cases of the store suite; each takes a [`Backend`] (see `mod.rs`).

use std::sync::Arc;

use kiln_model::csv::parse_hardware_csv;
use kiln_model::workflow::{Workflow, WorkflowState};
use kiln_model::{Event, EventKind, Hardware};

use super::Backend;
use crate::{
    ApiTokenRecord, ClusterNode, ClusterRecord, ImageRecord, MAX_EVENTS_PER_MACHINE, ServerRecord,
    Store, StoreError, WorkflowKey,
};

const HEADER: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n";

fn machines(rows: &str) -> Vec<Hardware> {
    parse_hardware_csv("t.csv", &format!("{HEADER}{rows}")).unwrap()
}

pub fn workflow_machine(name: &str, n: u8) -> Vec<Hardware> {
    machines(&format!(
        "{name},,,,aa:00:00:00:00:{n:02x},10.0.0.{n},255.255.255.0,,,,/dev/sda\n"
    ))
}

pub fn workflow(id: &str, hardware: &str) -> Workflow {
    Workflow {
        id: id.into(),
        hardware: hardware.into(),
        template: "t".into(),
        state: WorkflowState::Pending,
        actions: vec![],
        created_ms: 1,
        updated_ms: 1,
        ended_ms: None,
        deadline_ms: 1_000_000,
        message: String::new(),
        power: Default::default(),
        template_source: None,
        retry_of: None,
        log_lines_dropped: 0,
        agent_claim: None,
        seed_served_ms: None,
        rendered_for: None,
    }
}

pub fn enroll_is_idempotent_and_keeps_netboot(b: &Backend) {
    let store = &b.store;
    let hw = machines(
        "n1,10.1.0.1,admin,pw,aa:00:00:00:00:01,10.0.0.11,255.255.255.0,10.0.0.1,,type=cp,/dev/sda\n",
    );
    let s = store.enroll(&hw).unwrap();
    assert_eq!(s.added, vec!["n1"]);
    store.set_netboot("n1", true).unwrap();
    let s = store.enroll(&hw).unwrap();
    assert_eq!(s.unchanged, vec!["n1"]);
    let got = store.hardware_by_name("n1").unwrap().unwrap();
    assert!(got.netboot);
    assert_eq!(got.bmc.unwrap().password.expose(), "pw");
    let by_mac = store.hardware_by_mac(&hw[0].mac).unwrap().unwrap();
    assert_eq!(by_mac.hostname, "n1");
}

pub fn update_by_mac_renames_and_by_hostname_changes_mac(b: &Backend) {
    let store = &b.store;
    store
        .enroll(&machines(
            "n1,,,,aa:00:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    let s = store
        .enroll(&machines(
            "n1b,,,,aa:00:00:00:00:01,10.0.0.12,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    assert_eq!(s.updated, vec!["n1b"]);
    let all = store.hardware().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].ip.to_string(), "10.0.0.12");
}

pub fn ip_swap_in_one_file_is_allowed(b: &Backend) {
    let store = &b.store;
    store
        .enroll(&machines(
            "a,,,,aa:00:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/sda\nb,,,,aa:00:00:00:00:02,10.0.0.12,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    store
        .enroll(&machines(
            "a,,,,aa:00:00:00:00:01,10.0.0.12,255.255.255.0,,,,/dev/sda\nb,,,,aa:00:00:00:00:02,10.0.0.11,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    assert_eq!(
        store.hardware_by_name("a").unwrap().unwrap().ip.to_string(),
        "10.0.0.12"
    );
}

pub fn conflicts_abort_everything(b: &Backend) {
    let store = &b.store;
    store
        .enroll(&machines(
            "a,,,,aa:00:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    let err = store
        .enroll(&machines(
            "c,,,,aa:00:00:00:00:03,10.0.0.13,255.255.255.0,,,,/dev/sda\nb,,,,aa:00:00:00:00:02,10.0.0.11,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap_err();
    match err {
        StoreError::Conflicts(c) => {
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].index, c[0].field), (1, "ip_address"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(store.hardware().unwrap().len(), 1, "c must not be stored");
    store
        .enroll(&machines(
            "b,,,,aa:00:00:00:00:02,10.0.0.12,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap();
    let err = store
        .enroll(&machines(
            "a,,,,aa:00:00:00:00:02,10.0.0.11,255.255.255.0,,,,/dev/sda\n",
        ))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflicts(ref c) if c[0].field == "mac"),
        "{err:?}"
    );
}

pub fn netboot_on_unknown_machine(b: &Backend) {
    assert!(matches!(
        b.store.set_netboot("nope", true),
        Err(StoreError::NotFound(_))
    ));
}

pub fn update_hardware_keeps_identity(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    let hw = store
        .update_hardware("a", &mut |hw| {
            hw.labels.insert("rack".into(), "r1".into());
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.hardware_by_name("a").unwrap().unwrap().labels,
        hw.labels
    );
    let err = store
        .update_hardware("a", &mut |hw| {
            hw.ip = "10.9.9.9".parse().unwrap();
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let err = store
        .update_hardware("a", &mut |_| Err("no".into()))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m == "no"),
        "{err}"
    );
    assert!(matches!(
        store.update_hardware("zz", &mut |_| Ok(())),
        Err(StoreError::NotFound(_))
    ));
}

pub fn delete_hardware_is_refused_while_busy(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store.set_bmc_hint("a", "ipmi://x", "h").unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    assert!(matches!(
        store.delete_hardware("a"),
        Err(StoreError::Busy { ref id, .. }) if id == "w1"
    ));
    store
        .with_workflow(WorkflowKey::Id("w1"), |wf, _| {
            wf.state = WorkflowState::Failed;
            Ok(())
        })
        .unwrap();
    store.delete_hardware("a").unwrap();
    assert_eq!(store.hardware_by_name("a").unwrap(), None);
    assert_eq!(store.bmc_hint("a", "ipmi://x").unwrap(), None);
    assert!(matches!(
        store.delete_hardware("a"),
        Err(StoreError::NotFound(_))
    ));
}

pub fn other_connections_commits_change_data_version(b: &Backend) {
    let server = &b.store;
    let cli = (b.reopen)();
    let v0 = server.data_version().unwrap();
    cli.enroll(&workflow_machine("a", 1)).unwrap();
    let v1 = server.data_version().unwrap();
    assert_ne!(v1, v0);
    // As the engine creates one: the machine's netboot turns on (hardware a server holds).
    cli.create_workflows(&[workflow("w1", "a")], &mut |wf, tx| {
        tx.set_netboot(&wf.hardware, true)
    })
    .unwrap();
    assert_ne!(server.data_version().unwrap(), v1);
}

pub fn a_flood_of_fetches_cannot_push_out_workflow_and_bmc_events(b: &Backend) {
    let store = &b.store;
    store
        .append_events(&[
            Event::now(EventKind::WorkflowCreated, "w1").with_machine("a"),
            Event::now(EventKind::BmcDone, "power on into netboot").with_machine("a"),
        ])
        .unwrap();
    let flood: Vec<Event> = (0..MAX_EVENTS_PER_MACHINE + 100)
        .map(|i| Event::now(EventKind::HttpScript, format!("#{i}")).with_machine("a"))
        .collect();
    store.append_events(&flood).unwrap();
    let kinds: Vec<EventKind> = store
        .events(Some("a"), 0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert!(kinds.contains(&EventKind::WorkflowCreated), "kept");
    assert!(kinds.contains(&EventKind::BmcDone), "kept");
    let fetches = kinds
        .iter()
        .filter(|k| **k == EventKind::HttpScript)
        .count();
    assert_eq!(fetches as i64, MAX_EVENTS_PER_MACHINE, "still bounded");
}

pub fn history_is_bounded_per_machine_and_filterable(b: &Backend) {
    let store = &b.store;
    let n = MAX_EVENTS_PER_MACHINE as usize + 50;
    let batch: Vec<Event> = (0..n)
        .map(|i| Event::now(EventKind::DhcpOffer, format!("#{i}")).with_machine("a"))
        .collect();
    store.append_events(&batch).unwrap();
    store
        .append_events(&[Event::now(EventKind::TftpSent, "x").with_machine("b")])
        .unwrap();
    // Events of no known machine are bounded together.
    let anonymous: Vec<Event> = (0..n)
        .map(|i| Event::now(EventKind::DhcpOffer, format!("#{i}")))
        .collect();
    store.append_events(&anonymous).unwrap();
    let a = store.events(Some("a"), 0, 10_000).unwrap();
    assert_eq!(a.len(), MAX_EVENTS_PER_MACHINE as usize);
    assert_eq!(
        a.last().unwrap().event.detail,
        format!("#{}", n - 1),
        "the newest are kept"
    );
    let b_events = store.events(Some("b"), 0, 10).unwrap();
    assert_eq!(b_events.len(), 1);
    let all = store.events(None, 0, 100_000).unwrap();
    assert_eq!(all.len(), 2 * MAX_EVENTS_PER_MACHINE as usize + 1);
    let last = all.last().unwrap().id;
    assert!(store.events(None, last, 10).unwrap().is_empty());
    assert_eq!(store.last_event_id().unwrap(), last);
}

pub fn a_hint_is_kept_per_machine_and_only_for_its_address(b: &Backend) {
    let store = &b.store;
    let (a1, a2) = ("redfish+https://10.0.0.1", "redfish+https://10.0.0.2");
    assert_eq!(store.bmc_hint("n1", a1).unwrap(), None);
    store.set_bmc_hint("n1", a1, "{\"system\":\"/a\"}").unwrap();
    assert_eq!(
        store.bmc_hint("n1", a1).unwrap().as_deref(),
        Some("{\"system\":\"/a\"}")
    );
    assert_eq!(store.bmc_hint("n1", a2).unwrap(), None);
    store.set_bmc_hint("n1", a2, "{\"system\":\"/b\"}").unwrap();
    assert_eq!(store.bmc_hint("n1", a1).unwrap(), None);
    assert_eq!(
        store.bmc_hint("n1", a2).unwrap().as_deref(),
        Some("{\"system\":\"/b\"}")
    );
    assert_eq!(store.bmc_hint("n2", a2).unwrap(), None);
}

pub fn inventory_history_is_bounded_per_machine_and_facts_replace(b: &Backend) {
    let store = &b.store;
    assert!(store.inventories("n1", 10).unwrap().is_empty());
    for i in 0..5u64 {
        store
            .put_inventory("n1", 1000 + i, &format!("{{\"n\":{i}}}"), 3)
            .unwrap();
    }
    store.put_inventory("n2", 7, "{}", 3).unwrap();
    let got = store.inventories("n1", 10).unwrap();
    let at: Vec<u64> = got.iter().map(|r| r.at_ms).collect();
    assert_eq!(at, [1004, 1003, 1002], "newest first, the oldest dropped");
    assert_eq!(got[0].report, "{\"n\":4}");
    assert_eq!(store.inventories("n1", 1).unwrap().len(), 1);
    assert_eq!(store.inventories("n2", 10).unwrap().len(), 1, "per machine");
    assert_eq!(store.machine_fact("n1", "installed-disk").unwrap(), None);
    store.set_machine_fact("n1", "installed-disk", "a").unwrap();
    store.set_machine_fact("n1", "installed-disk", "b").unwrap();
    store.set_machine_fact("n1", "bmc-system", "c").unwrap();
    assert_eq!(
        store
            .machine_fact("n1", "installed-disk")
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(store.machine_fact("n2", "installed-disk").unwrap(), None);
    // Facts and reports of a forgotten machine go with it.
    store.enroll(&workflow_machine("n1", 1)).unwrap();
    store.delete_hardware("n1").unwrap();
    assert!(store.inventories("n1", 10).unwrap().is_empty());
    assert_eq!(store.machine_fact("n1", "bmc-system").unwrap(), None);
}

fn image(name: &str, file: &str) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        file: file.into(),
        raw_size: 10,
        sha256: "ab".repeat(32),
        created_ms: 1,
        source_format: "raw.gz".into(),
    }
}

pub fn add_keeps_an_existing_image_and_put_replaces_it(b: &Backend) {
    let store = &b.store;
    let first = image("os-v1.30", "os-v1.30-abababababababab.raw.zst");
    assert!(store.add_image(&first).unwrap());
    let second = image("os-v1.30", "os-v1.30-cdcdcdcdcdcdcdcd.raw.zst");
    assert!(!store.add_image(&second).unwrap());
    assert_eq!(store.image("os-v1.30").unwrap(), Some(first));
    store.put_image(&second).unwrap();
    assert_eq!(store.images().unwrap(), vec![second.clone()]);
    assert_eq!(store.image("other").unwrap(), None);
    assert_eq!(store.delete_image("os-v1.30").unwrap(), Some(second));
    assert_eq!(store.delete_image("os-v1.30").unwrap(), None);
    assert!(store.images().unwrap().is_empty());
}

pub fn a_revoked_token_is_listed_but_no_longer_found(b: &Backend) {
    let store = &b.store;
    let t = ApiTokenRecord {
        id: "t1".into(),
        name: "ci".into(),
        scope: "read-only".into(),
        created_ms: 5,
        revoked_ms: None,
    };
    store.insert_api_token(&t, "h1").unwrap();
    assert_eq!(store.api_token_by_hash("h1").unwrap(), Some(t.clone()));
    assert_eq!(store.api_token_by_hash("h2").unwrap(), None);
    assert_eq!(store.revoke_api_token("ci", 9).unwrap(), 1);
    assert_eq!(store.api_token_by_hash("h1").unwrap(), None);
    assert_eq!(store.api_tokens().unwrap()[0].revoked_ms, Some(9));
    assert_eq!(store.revoke_api_token("ci", 10).unwrap(), 0);
}

pub fn settings_round_trip(b: &Backend) {
    let store = &b.store;
    assert_eq!(store.setting("url").unwrap(), None);
    store.set_setting("url", "http://a").unwrap();
    store.set_setting("url", "http://b").unwrap();
    assert_eq!(store.setting("url").unwrap().as_deref(), Some("http://b"));
    assert!(!store.describe().is_empty());
}

pub fn servers_beat_and_every_connection_sees_them(b: &Backend) {
    let store = &b.store;
    assert!(store.servers().unwrap().is_empty());
    let beat =
        |id: &str, url: &str, agent: Option<(&str, &str)>, started_ms, seen_ms| ServerRecord {
            id: id.into(),
            url: url.into(),
            agent_api: agent.map(|a| a.0.to_string()),
            ca_sha256: agent.map(|a| a.1.to_string()),
            started_ms,
            seen_ms,
        };
    let pin = "ab".repeat(32);
    store
        .heartbeat(&beat("s1", "http://a", None, 10, 11))
        .unwrap();
    let s1 = beat("s1", "http://a", Some(("https://a:8443", &pin)), 10, 15);
    store.heartbeat(&s1).unwrap();
    let other = (b.reopen)();
    let s2 = beat("s2", "http://b", None, 12, 13);
    other.heartbeat(&s2).unwrap();
    assert_eq!(store.servers().unwrap(), [s1, s2]);
    // A claim by id works the same whether or not the backend can skip locked rows.
    store.enroll(&workflow_machine("m", 1)).unwrap();
    store
        .create_workflows(&[workflow("w", "m")], &mut |_, _| Ok(()))
        .unwrap();
    store
        .with_workflow(WorkflowKey::IdUnlessLocked("w"), |wf, _| {
            wf.log_lines_dropped = 3;
            Ok(())
        })
        .unwrap();
    assert_eq!(other.workflow("w").unwrap().unwrap().log_lines_dropped, 3);
    assert!(matches!(
        store.with_workflow(WorkflowKey::IdUnlessLocked("nope"), |_, _| Ok(())),
        Err(StoreError::NoWorkflow)
    ));
}

pub fn one_unfinished_workflow_per_machine_and_all_or_nothing(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store.enroll(&workflow_machine("b", 2)).unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |wf, tx| {
            tx.set_netboot(&wf.hardware, true)?;
            tx.event(&Event::now(EventKind::WorkflowCreated, &wf.id).with_machine(&wf.hardware))
        })
        .unwrap();
    assert!(store.hardware_by_name("a").unwrap().unwrap().netboot);
    // b's workflow is fine, a's is not: neither is stored.
    let err = store
        .create_workflows(&[workflow("w2", "b"), workflow("w3", "a")], &mut |_, _| {
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Busy { ref hardware, ref id } if hardware == "a" && id == "w1"),
        "{err}"
    );
    assert_eq!(store.workflow("w2").unwrap(), None);
    // `then` failing aborts too.
    let err = store
        .create_workflows(&[workflow("w2", "b")], &mut |_, _| {
            Err(StoreError::Invalid("refused".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(store.workflow("w2").unwrap(), None);
    assert_eq!(store.workflows(true).unwrap().len(), 1);
    let events = store.events(Some("a"), 0, 10).unwrap();
    assert_eq!(events.len(), 1);
}

pub fn workflows_are_counted_by_state(b: &Backend) {
    let store = &b.store;
    assert_eq!(store.workflow_state_counts().unwrap(), []);
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store.enroll(&workflow_machine("b", 2)).unwrap();
    let with = |id: &str, machine: &str, state| Workflow {
        state,
        ..workflow(id, machine)
    };
    let wfs = [
        with("w0", "a", WorkflowState::Failed),
        with("w1", "a", WorkflowState::Failed),
        workflow("w2", "a"),
        with("w3", "b", WorkflowState::Running),
    ];
    store.create_workflows(&wfs, &mut |_, _| Ok(())).unwrap();
    let mut counts = store.workflow_state_counts().unwrap();
    counts.sort_by_key(|(s, _)| s.name());
    assert_eq!(
        counts,
        [
            (WorkflowState::Failed, 2),
            (WorkflowState::Pending, 1),
            (WorkflowState::Running, 1)
        ]
    );
}

pub fn a_transition_commits_its_effects_or_nothing(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |wf, tx| {
            tx.set_agent_token_hash(&wf.id, Some("hash1"))
        })
        .unwrap();
    // A failing change leaves nothing behind, not even its effects.
    let err = store
        .with_workflow(WorkflowKey::AgentTokenHash("hash1"), |wf, tx| {
            wf.state = WorkflowState::Running;
            tx.set_netboot("a", true)?;
            tx.event(&Event::now(EventKind::WorkflowCreated, "x").with_machine("a"))?;
            Err::<(), _>(StoreError::Invalid("no".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(
        store.workflow("w1").unwrap().unwrap().state,
        WorkflowState::Pending
    );
    assert!(!store.hardware_by_name("a").unwrap().unwrap().netboot);
    assert!(store.events(None, 0, 10).unwrap().is_empty());
    // A change that succeeds stores everything, and returns what the change returned.
    let got = store
        .with_workflow(WorkflowKey::UnfinishedOf("a"), |wf, tx| {
            wf.state = WorkflowState::Succeeded;
            wf.power.finish.state = kiln_model::workflow::StepState::Pending;
            tx.revoke_token(&wf.id)?;
            tx.phone_home(&wf.id, 7, "10.0.0.1", "{}")?;
            Ok(wf.id.clone())
        })
        .unwrap();
    assert_eq!(got, "w1");
    assert_eq!(
        store.workflow("w1").unwrap().unwrap().state,
        WorkflowState::Succeeded
    );
    assert_eq!(
        store.workflows_with_power_due().unwrap(),
        vec![("w1".to_string(), "a".to_string())]
    );
    assert!(store.workflows(true).unwrap().is_empty());
    assert_eq!(store.workflows(false).unwrap().len(), 1);
    assert_eq!(store.phone_home_of("w1").unwrap().unwrap().peer, "10.0.0.1");
    assert!(matches!(
        store.with_workflow(WorkflowKey::AgentTokenHash("hash1"), |_, _| Ok(())),
        Err(StoreError::NoWorkflow)
    ));
    assert!(matches!(
        store.with_workflow(WorkflowKey::UnfinishedOf("a"), |_, _| Ok(())),
        Err(StoreError::NoWorkflow)
    ));
}

/// Two connections (two servers) each apply many read-modify-write transitions to one
/// workflow: none is lost, so none read a state the other was about to replace.
pub fn concurrent_transitions_from_two_connections_never_interleave(b: &Backend) {
    b.store.enroll(&workflow_machine("a", 1)).unwrap();
    b.store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    const EACH: u64 = 50;
    let stores: Vec<Arc<dyn Store>> = vec![(b.reopen)(), (b.reopen)()];
    std::thread::scope(|s| {
        for store in &stores {
            s.spawn(move || {
                for _ in 0..EACH {
                    store
                        .with_workflow(WorkflowKey::Id("w1"), |wf, _| {
                            wf.log_lines_dropped += 1;
                            Ok(())
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        b.store.workflow("w1").unwrap().unwrap().log_lines_dropped,
        2 * EACH
    );
}

/// Two connections create a workflow for the same machine at once: exactly one wins, the
/// other is told the machine is busy.
pub fn concurrent_creations_for_one_machine_admit_one(b: &Backend) {
    b.store.enroll(&workflow_machine("a", 1)).unwrap();
    let stores: Vec<Arc<dyn Store>> = vec![(b.reopen)(), (b.reopen)()];
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    store.create_workflows(&[workflow(&format!("w{i}"), "a")], &mut |_, _| {
                        // Hold the transaction open a moment so the two overlap.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok(())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(StoreError::Busy { hardware, .. }) if hardware == "a")),
        "{results:?}"
    );
    assert_eq!(b.store.workflows(true).unwrap().len(), 1);
}

pub fn clusters_and_their_nodes(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store.enroll(&workflow_machine("b", 2)).unwrap();
    let c = ClusterRecord {
        name: "c1".into(),
        spec_file: "c1.yaml".into(),
        spec: "spec".into(),
        plan: "{}".into(),
        secrets: "{}".into(),
        created_ms: 3,
    };
    let node = |h: &str, w: &str| ClusterNode {
        cluster: "c1".into(),
        hostname: h.into(),
        role: "cp".into(),
        workflow: w.into(),
    };
    store
        .create_workflows(
            &[workflow("wb", "b"), workflow("wa", "a")],
            &mut |wf, tx| {
                if wf.id == "wb" {
                    tx.insert_cluster(&c)?;
                }
                tx.insert_cluster_node(&node(&wf.hardware, &wf.id))
            },
        )
        .unwrap();
    assert_eq!(store.clusters().unwrap(), vec![c.clone()]);
    assert_eq!(
        store.cluster_nodes("c1").unwrap(),
        vec![node("b", "wb"), node("a", "wa")],
        "in the order they were added"
    );
    let mut clustered = store.clustered_machines().unwrap();
    clustered.sort();
    assert_eq!(clustered, vec!["a", "b"]);
    // A retry takes the node's place.
    store
        .with_workflow(WorkflowKey::Id("wa"), |wf, tx| {
            wf.state = WorkflowState::Failed;
            tx.relink_cluster_node("wa", "wa2")
        })
        .unwrap();
    assert_eq!(store.cluster_of_workflow("wa").unwrap(), None);
    assert_eq!(
        store.cluster_of_workflow("wa2").unwrap(),
        Some((c.clone(), node("a", "wa2")))
    );
    assert!(matches!(
        store.delete_hardware("a"),
        Err(StoreError::Invalid(_))
    ));
    store.delete_cluster("c1").unwrap();
    assert_eq!(store.cluster("c1").unwrap(), None);
    assert!(store.clustered_machines().unwrap().is_empty());
}

pub fn logs_are_stored_in_order(b: &Backend) {
    let store = &b.store;
    store.enroll(&workflow_machine("a", 1)).unwrap();
    store
        .create_workflows(&[workflow("w1", "a")], &mut |_, _| Ok(()))
        .unwrap();
    let long = "x".repeat(crate::MAX_LOG_LINE_BYTES + 10);
    let dropped = store
        .with_workflow(WorkflowKey::Id("w1"), |wf, tx| {
            tx.log(
                &wf.id,
                0,
                1,
                5,
                &["one".into(), long.clone(), "three".into()],
            )
        })
        .unwrap();
    assert_eq!(dropped, 0);
    let logs = store.action_logs("w1", 0, 10).unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!((logs[0].line.as_str(), logs[0].attempt), ("one", 1));
    assert!(logs[1].line.ends_with("[10 bytes cut]"), "{}", logs[1].line);
    let after = store.action_logs("w1", logs[0].id, 1).unwrap();
    assert_eq!(after[0].line, logs[1].line);
}

/// Enrolments (which lock the hardware table) beside workflow creations and transitions that
/// turn netboot on and off (a workflow row first, then a machine row), from two connections:
/// neither waits on the other for ever, so no deadlock error reaches either.
pub fn concurrent_enrolments_and_transitions_do_not_deadlock(b: &Backend) {
    let rack = machines(
        "a,,,,aa:00:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/sda\nb,,,,aa:00:00:00:00:02,10.0.0.12,255.255.255.0,,,,/dev/sda\n",
    );
    b.store.enroll(&rack).unwrap();
    let (enroller, engine) = ((b.reopen)(), (b.reopen)());
    const ROUNDS: usize = 30;
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..ROUNDS {
                enroller.enroll(&rack).unwrap();
            }
        });
        s.spawn(|| {
            for i in 0..ROUNDS {
                let id = format!("w{i}");
                engine
                    .create_workflows(&[workflow(&id, "a")], &mut |wf, tx| {
                        tx.set_netboot(&wf.hardware, true)
                    })
                    .unwrap();
                engine
                    .with_workflow(WorkflowKey::Id(&id), |wf, tx| {
                        wf.state = WorkflowState::Failed;
                        tx.set_netboot("a", false)?;
                        tx.set_netboot("b", i % 2 == 1)
                    })
                    .unwrap();
            }
        });
    });
    assert_eq!(b.store.workflows(false).unwrap().len(), ROUNDS);
    assert!(b.store.workflows(true).unwrap().is_empty());
}

fn sighting(n: u16, at: u64) -> kiln_model::DiscoveredMac {
    kiln_model::DiscoveredMac {
        mac: format!("52:54:00:00:{:02x}:{:02x}", n >> 8, n & 0xff)
            .parse()
            .unwrap(),
        first_seen_ms: at,
        last_seen_ms: at,
        count: 1,
        client: kiln_model::event::DhcpClient::Pxe,
        arch: Some(0),
        vendor_class: Some("PXEClient:Arch:00000:UNDI:002001".into()),
        user_class: None,
        inspection: None,
    }
}

pub fn discovered_macs_merge_are_bounded_and_forgotten(b: &Backend) {
    use crate::discovery::MAX_DISCOVERED;
    let store = &b.store;
    store
        .record_discovered(&[sighting(1, 100), sighting(2, 150), sighting(1, 120)])
        .unwrap();
    let mut later = sighting(1, 300);
    later.client = kiln_model::event::DhcpClient::Ipxe;
    // Another connection (another server) adds to the same MAC.
    (b.reopen)().record_discovered(&[later]).unwrap();
    let all = store.discovered().unwrap();
    assert_eq!(all.len(), 2);
    let one = &all[0];
    assert_eq!(one.mac, sighting(1, 0).mac, "most recently seen first");
    assert_eq!(
        (one.first_seen_ms, one.last_seen_ms, one.count),
        (100, 300, 3)
    );
    assert_eq!(one.client, kiln_model::event::DhcpClient::Ipxe);

    // A flood of MACs keeps the most recently seen ones only.
    let flood: Vec<_> = (10..10 + MAX_DISCOVERED as u16 + 5)
        .map(|n| sighting(n, 1000 + u64::from(n)))
        .collect();
    store.record_discovered(&flood).unwrap();
    let all = store.discovered().unwrap();
    assert_eq!(all.len(), MAX_DISCOVERED);
    assert!(
        !all.iter().any(|d| d.mac == sighting(1, 0).mac),
        "oldest evicted"
    );
    assert_eq!(all[0].mac, flood.last().unwrap().mac);

    let gone = [flood[20].mac, flood[21].mac, sighting(1, 0).mac];
    assert_eq!(store.forget_discovered(&gone).unwrap(), 2);
    assert_eq!(store.discovered().unwrap().len(), MAX_DISCOVERED - 2);
}

pub fn an_inspection_is_kept_with_its_mac_across_sightings(b: &Backend) {
    let store = &b.store;
    store.record_discovered(&[sighting(7, 100)]).unwrap();
    // The hardware inventory's type lives in kiln-api, which this crate reads only as JSON.
    let inspection: kiln_model::discovery::Inspection = serde_json::from_str(
        r#"{"at_ms":200,"inventory":{"cpu":{"model":"QEMU","cores":2},"memory_bytes":2147483648,
            "firmware":"bios","dmi":{"vendor":"QEMU","product":"pc","serial":""},
            "disks":[],"nics":[],"unbound_pci":[]}}"#,
    )
    .unwrap();
    let inventory = inspection.inventory.clone();
    let mut report = sighting(7, 200);
    report.count = 0;
    report.inspection = Some(inspection);
    // The report comes through another connection (the agent API's), then DHCP sees it again.
    (b.reopen)().record_discovered(&[report]).unwrap();
    store.record_discovered(&[sighting(7, 300)]).unwrap();
    let all = store.discovered().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].count, all[0].last_seen_ms), (2, 300));
    let kept = all[0].inspection.as_ref().expect("the inspection is kept");
    assert_eq!((kept.at_ms, &kept.inventory), (200, &inventory));
    // Forgetting the MAC (enrolled) forgets its inspection too.
    store.forget_discovered(&[all[0].mac]).unwrap();
    assert!(store.discovered().unwrap().is_empty());
}
