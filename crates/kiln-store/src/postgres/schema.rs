//! Schema migrations, numbered; `schema_version` records the last applied. They run in one
//! transaction under an advisory lock, so servers starting together migrate once.

use postgres::Client;

use crate::StoreError;

/// Key of the advisory lock migrations hold ("kiln" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b69_6c6e;

const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's schema 9 holds. `data_version` is bumped by a trigger once in every
    // transaction that changes hardware or workflows, at its commit (and notified on
    // `kiln_changes`), so other servers notice the change once it commits.
    "CREATE TABLE hardware (
        hostname     TEXT PRIMARY KEY,
        mac          TEXT NOT NULL UNIQUE,
        ip           TEXT NOT NULL UNIQUE,
        bmc_address  TEXT UNIQUE,
        bmc_password TEXT,
        netboot      BOOLEAN NOT NULL DEFAULT false,
        record       TEXT NOT NULL,
        updated_ms   BIGINT NOT NULL
     );
     CREATE TABLE events (
        id      BIGSERIAL PRIMARY KEY,
        at_ms   BIGINT NOT NULL,
        machine TEXT,
        record  TEXT NOT NULL,
        wire    BOOLEAN NOT NULL DEFAULT false
     );
     CREATE INDEX events_by_machine ON events (machine, id);
     CREATE INDEX events_by_machine_and_class ON events (machine, wire, id);
     CREATE TABLE workflows (
        id               TEXT PRIMARY KEY,
        hardware         TEXT NOT NULL,
        state            TEXT NOT NULL,
        record           TEXT NOT NULL,
        created_ms       BIGINT NOT NULL,
        updated_ms       BIGINT NOT NULL,
        power_due        BOOLEAN NOT NULL DEFAULT false,
        agent_token_hash TEXT
     );
     CREATE UNIQUE INDEX one_unfinished_workflow ON workflows (hardware)
        WHERE state NOT IN ('succeeded', 'failed', 'timed-out');
     CREATE UNIQUE INDEX workflows_by_agent_token ON workflows (agent_token_hash)
        WHERE agent_token_hash IS NOT NULL;
     CREATE INDEX workflows_power_due ON workflows (created_ms) WHERE power_due;
     CREATE TABLE action_logs (
        id       BIGSERIAL PRIMARY KEY,
        workflow TEXT NOT NULL,
        action   BIGINT NOT NULL,
        attempt  BIGINT NOT NULL,
        at_ms    BIGINT NOT NULL,
        line     TEXT NOT NULL
     );
     CREATE INDEX action_logs_by_workflow ON action_logs (workflow, id);
     CREATE TABLE images (
        name          TEXT PRIMARY KEY,
        file          TEXT NOT NULL,
        raw_size      BIGINT NOT NULL,
        sha256        TEXT NOT NULL,
        created_ms    BIGINT NOT NULL,
        source_format TEXT NOT NULL DEFAULT ''
     );
     CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );
     CREATE TABLE phone_home (
        workflow TEXT PRIMARY KEY,
        at_ms    BIGINT NOT NULL,
        peer     TEXT NOT NULL,
        payload  TEXT NOT NULL
     );
     CREATE TABLE clusters (
        name       TEXT PRIMARY KEY,
        spec_file  TEXT NOT NULL,
        spec       TEXT NOT NULL,
        plan       TEXT NOT NULL,
        secrets    TEXT NOT NULL,
        created_ms BIGINT NOT NULL
     );
     CREATE TABLE cluster_nodes (
        seq      BIGSERIAL,
        cluster  TEXT NOT NULL,
        hostname TEXT NOT NULL,
        role     TEXT NOT NULL,
        workflow TEXT NOT NULL,
        PRIMARY KEY (cluster, hostname)
     );
     CREATE INDEX cluster_nodes_by_workflow ON cluster_nodes (workflow);
     CREATE TABLE bmc_hints (
        hostname   TEXT PRIMARY KEY,
        address    TEXT NOT NULL,
        hint       TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
     );
     CREATE TABLE api_tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        scope      TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_ms BIGINT NOT NULL,
        revoked_ms BIGINT
     );
     CREATE TABLE data_version (
        one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        version BIGINT NOT NULL
     );
     INSERT INTO data_version (one, version) VALUES (true, 1);
     CREATE FUNCTION kiln_data_changed() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        -- Once per transaction, at its commit (the trigger is deferred): the lock on the
        -- counter is the last one a transaction takes, so it closes no deadlock cycle.
        IF current_setting('kiln.data_changed', true) = 'yes' THEN
           RETURN NULL;
        END IF;
        PERFORM set_config('kiln.data_changed', 'yes', true);
        UPDATE data_version SET version = version + 1;
        PERFORM pg_notify('kiln_changes', '');
        RETURN NULL;
     END $$;
     CREATE CONSTRAINT TRIGGER hardware_changed AFTER INSERT OR UPDATE OR DELETE ON hardware
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kiln_data_changed();
     CREATE CONSTRAINT TRIGGER workflows_changed AFTER INSERT OR UPDATE OR DELETE ON workflows
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kiln_data_changed();",
    // 2: MACs not enrolled that asked for DHCP (discovery), at most 1,024 (see discovery.rs).
    "CREATE TABLE discovered (
        mac          TEXT PRIMARY KEY,
        last_seen_ms BIGINT NOT NULL,
        record       TEXT NOT NULL
     );
     CREATE INDEX discovered_by_last_seen ON discovered (last_seen_ms);",
    // 3: the servers sharing this state, by the heartbeat each writes.
    "CREATE TABLE servers (
        id         TEXT PRIMARY KEY,
        url        TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        seen_ms    BIGINT NOT NULL
     );",
    // 4: hardware inventory reports (a bounded history per machine) and small facts about a
    // machine kept across workflows (the disk of its last install, what its BMC says).
    "CREATE TABLE inventories (
        id       BIGSERIAL PRIMARY KEY,
        hostname TEXT NOT NULL,
        at_ms    BIGINT NOT NULL,
        report   TEXT NOT NULL
     );
     CREATE INDEX inventories_by_machine ON inventories (hostname, id);
     CREATE TABLE machine_facts (
        hostname   TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (hostname, key)
     );",
    // 5: only hardware changes move `data_version`: a server holds only the hardware in
    // memory (it reads workflows from here at each use), and a thousand machines reporting
    // made every workflow write wait for the one counter row at its commit.
    "DROP TRIGGER IF EXISTS workflows_changed ON workflows;",
    // 6: where each server serves the agent API and the CA it pins, so an agent can be
    // given the others to move to (see ServerRecord).
    "ALTER TABLE servers ADD COLUMN agent_api TEXT;
     ALTER TABLE servers ADD COLUMN ca_sha256 TEXT;",
];

pub fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // No "already exists, skipping" notices in the server's log at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
            version BIGINT NOT NULL
         )",
    )?;
    let current: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::TooNew {
            found: current,
            supported,
        });
    }
    for sql in &MIGRATIONS[current as usize..] {
        tx.batch_execute(sql)?;
    }
    tx.execute(
        "INSERT INTO schema_version (one, version) VALUES (true, $1)
         ON CONFLICT (one) DO UPDATE SET version = $1",
        &[&supported],
    )?;
    tx.commit()?;
    Ok(())
}
