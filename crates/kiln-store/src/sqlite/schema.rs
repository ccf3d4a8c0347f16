//! Schema migrations, numbered; `user_version` records the last applied.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: hardware and events.
    "CREATE TABLE hardware (
        hostname     TEXT PRIMARY KEY,
        mac          TEXT NOT NULL UNIQUE,
        ip           TEXT NOT NULL UNIQUE,
        bmc_address  TEXT UNIQUE,
        bmc_password TEXT,
        netboot      INTEGER NOT NULL DEFAULT 0,
        record       TEXT NOT NULL,
        updated_ms   INTEGER NOT NULL
     );
     CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms   INTEGER NOT NULL,
        machine TEXT,
        record  TEXT NOT NULL
     );
     CREATE INDEX events_by_machine ON events (machine, id);",
    // 2: workflows and their action logs. At most one unfinished workflow per machine.
    "CREATE TABLE workflows (
        id         TEXT PRIMARY KEY,
        hardware   TEXT NOT NULL,
        state      TEXT NOT NULL,
        token      TEXT UNIQUE,
        record     TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     CREATE UNIQUE INDEX one_unfinished_workflow ON workflows (hardware)
        WHERE state NOT IN ('succeeded', 'failed', 'timed-out');
     CREATE TABLE action_logs (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow TEXT NOT NULL,
        action   INTEGER NOT NULL,
        attempt  INTEGER NOT NULL,
        at_ms    INTEGER NOT NULL,
        line     TEXT NOT NULL
     );
     CREATE INDEX action_logs_by_workflow ON action_logs (workflow, id);
     CREATE TABLE images (
        name       TEXT PRIMARY KEY,
        file       TEXT NOT NULL,
        raw_size   INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        created_ms INTEGER NOT NULL
     );
     CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );
     CREATE TABLE phone_home (
        workflow TEXT PRIMARY KEY,
        at_ms    INTEGER NOT NULL,
        peer     TEXT NOT NULL,
        payload  TEXT NOT NULL
     );",
    // 3: workflows with a BMC step to run (pending or claimed), found without decoding every record.
    "ALTER TABLE workflows ADD COLUMN power_due INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX workflows_power_due ON workflows (power_due) WHERE power_due = 1;",
    // 4: clusters. `spec` is the file as given, `plan` and `secrets` JSON; secrets and the
    // uploaded kubeconfig hold keys (the database file is 0600 and they are never printed).
    "CREATE TABLE clusters (
        name       TEXT PRIMARY KEY,
        spec_file  TEXT NOT NULL,
        spec       TEXT NOT NULL,
        plan       TEXT NOT NULL,
        secrets    TEXT NOT NULL,
        kubeconfig TEXT,
        created_ms INTEGER NOT NULL
     );
     CREATE TABLE cluster_nodes (
        cluster  TEXT NOT NULL,
        hostname TEXT NOT NULL,
        role     TEXT NOT NULL,
        workflow TEXT NOT NULL,
        PRIMARY KEY (cluster, hostname)
     );
     CREATE INDEX cluster_nodes_by_workflow ON cluster_nodes (workflow);",
    // 5: what the last BMC call learnt about a machine's BMC (Redfish: system path, auth kind),
    // so the next one skips discovery; valid only while the BMC address is the same. No secrets.
    "CREATE TABLE bmc_hints (
        hostname   TEXT PRIMARY KEY,
        address    TEXT NOT NULL,
        hint       TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     );",
    // 6: what `kiln image import` read (`raw`, `qcow2.gz`); empty for images imported before.
    "ALTER TABLE images ADD COLUMN source_format TEXT NOT NULL DEFAULT '';",
    // 7: events caused by anonymous traffic (DHCP, TFTP, HTTP fetches) are bounded apart from a
    // machine's workflow and BMC events, so a flood of fetches cannot push those out.
    "ALTER TABLE events ADD COLUMN wire INTEGER NOT NULL DEFAULT 0;
     UPDATE events SET wire = 1 WHERE json_extract(record, '$.kind') GLOB 'dhcp.*'
        OR json_extract(record, '$.kind') GLOB 'tftp.*' OR json_extract(record, '$.kind') GLOB 'http.*';
     CREATE INDEX events_by_machine_and_class ON events (machine, wire, id);",
    // 8: agent credentials are claimed by the agent and kept as SHA-256 only; the plain tokens
    // of older workflows are dropped (their agents claim again). Admin kubeconfigs are minted
    // on demand now: uploaded ones (an admin key each) are dropped (secure_delete zeroes them).
    "ALTER TABLE workflows ADD COLUMN agent_token_hash TEXT;
     CREATE UNIQUE INDEX workflows_by_agent_token ON workflows (agent_token_hash)
        WHERE agent_token_hash IS NOT NULL;
     UPDATE workflows SET token = NULL;
     UPDATE clusters SET kubeconfig = NULL;",
    // 9: admin API bearer tokens, kept as SHA-256 only; revoked ones stay listed.
    "CREATE TABLE api_tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        scope      TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
     );",
    // 10: MACs not enrolled that asked for DHCP (discovery), at most 1,024 (see discovery.rs).
    "CREATE TABLE discovered (
        mac          TEXT PRIMARY KEY,
        last_seen_ms INTEGER NOT NULL,
        record       TEXT NOT NULL
     );
     CREATE INDEX discovered_by_last_seen ON discovered (last_seen_ms);",
    // 11: the servers sharing this state, by the heartbeat each writes (one, for SQLite).
    "CREATE TABLE servers (
        id         TEXT PRIMARY KEY,
        url        TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        seen_ms    INTEGER NOT NULL
     );",
    // 12: hardware inventory reports (a bounded history per machine) and small facts about a
    // machine kept across workflows (the disk of its last install, what its BMC says).
    "CREATE TABLE inventories (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        hostname TEXT NOT NULL,
        at_ms    INTEGER NOT NULL,
        report   TEXT NOT NULL
     );
     CREATE INDEX inventories_by_machine ON inventories (hostname, id);
     CREATE TABLE machine_facts (
        hostname   TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (hostname, key)
     );",
    // 13: where each server serves the agent API and the CA it pins, so an agent can be
    // given the others to move to (see ServerRecord).
    "ALTER TABLE servers ADD COLUMN agent_api TEXT;
     ALTER TABLE servers ADD COLUMN ca_sha256 TEXT;",
];

pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::TooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::*;

    #[test]
    fn images_imported_before_schema_6_keep_their_file_and_an_empty_source_format() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute(
                "INSERT INTO images (name, file, raw_size, sha256, created_ms) VALUES ('os', 'os.raw.zst', 7, 'ab', 1)",
                [],
            )
            .unwrap();
        }
        let store = crate::SqliteStore::open(dir.path()).unwrap();
        let old = store.image("os").unwrap().unwrap();
        assert_eq!(
            (old.file.as_str(), old.raw_size, old.source_format.as_str()),
            ("os.raw.zst", 7, "")
        );
    }
}
