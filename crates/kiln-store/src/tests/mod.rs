//! The store test suite, run against every backend: each test is written once over a
//! [`Backend`] and instantiated for SQLite and for PostgreSQL (a cluster of its own, see
//! [`crate::testing`]; `KILN_SKIP_PG=1` skips those).

mod cases;
mod postgres_only;

use std::any::Any;
use std::sync::Arc;

use crate::Store;

/// A store under test: what keeps it alive, the store, and a way to open a second
/// connection to the same state (another process, another server).
pub struct Backend {
    _guard: Box<dyn Any>,
    pub store: Arc<dyn Store>,
    pub reopen: Box<dyn Fn() -> Arc<dyn Store>>,
}

pub fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = crate::open_sqlite(&data).unwrap();
    Some(Backend {
        _guard: Box::new(dir),
        store,
        reopen: Box::new(move || crate::open_sqlite(&data).unwrap()),
    })
}

pub fn postgres() -> Option<Backend> {
    if crate::testing::skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return None;
    }
    let (cluster, url) = crate::testing::fresh_database();
    let location = crate::Location::Postgres { url };
    let store = crate::open(&location, crate::Durability::Full).unwrap();
    Some(Backend {
        _guard: Box::new(cluster),
        store,
        reopen: Box::new(move || crate::open(&location, crate::Durability::Full).unwrap()),
    })
}

/// One `#[test]` per case and backend: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $( #[test] fn $name() { if let Some(b) = super::sqlite() { super::cases::$name(&b) } } )*
        }
        mod on_postgres {
            $( #[test] fn $name() { if let Some(b) = super::postgres() { super::cases::$name(&b) } } )*
        }
    };
}

store_tests!(
    enroll_is_idempotent_and_keeps_netboot,
    update_by_mac_renames_and_by_hostname_changes_mac,
    ip_swap_in_one_file_is_allowed,
    conflicts_abort_everything,
    netboot_on_unknown_machine,
    update_hardware_keeps_identity,
    workflows_are_counted_by_state,
    delete_hardware_is_refused_while_busy,
    other_connections_commits_change_data_version,
    a_flood_of_fetches_cannot_push_out_workflow_and_bmc_events,
    history_is_bounded_per_machine_and_filterable,
    a_hint_is_kept_per_machine_and_only_for_its_address,
    inventory_history_is_bounded_per_machine_and_facts_replace,
    add_keeps_an_existing_image_and_put_replaces_it,
    a_revoked_token_is_listed_but_no_longer_found,
    settings_round_trip,
    servers_beat_and_every_connection_sees_them,
    one_unfinished_workflow_per_machine_and_all_or_nothing,
    a_transition_commits_its_effects_or_nothing,
    concurrent_transitions_from_two_connections_never_interleave,
    concurrent_creations_for_one_machine_admit_one,
    clusters_and_their_nodes,
    logs_are_stored_in_order,
    concurrent_enrolments_and_transitions_do_not_deadlock,
    discovered_macs_merge_are_bounded_and_forgotten,
    an_inspection_is_kept_with_its_mac_across_sightings,
);
