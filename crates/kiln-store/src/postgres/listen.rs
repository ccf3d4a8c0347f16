//! Changes other servers commit, as they commit: `LISTEN kiln_changes` on a connection of its
//! own (the trigger that bumps `data_version` notifies), so a server's in-memory inventory
//! follows the shared state within milliseconds rather than at its next poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

/// How long the listener waits for a notification before it looks whether it must stop.
const WAIT: Duration = Duration::from_millis(250);
/// How long it waits before connecting again after losing its connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// The listening thread; it stops (within [`WAIT`]) when this is dropped.
pub struct ChangeWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Calls `on_change` (from a thread of its own) whenever a transaction that changed hardware or
/// workflows commits, and once after each (re)connection, since changes may have been missed
/// while disconnected. Reconnects every second while PostgreSQL is unreachable.
pub fn watch(
    connect: impl Fn() -> Result<Client, crate::StoreError> + Send + 'static,
    on_change: impl Fn() + Send + 'static,
) -> ChangeWatch {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    // Should the thread not start, the server's poll of `data_version` still finds changes.
    let _ = std::thread::Builder::new()
        .name("kiln-pg-listen".into())
        .spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match connect().and_then(|mut c| {
                    c.batch_execute("LISTEN kiln_changes")?;
                    Ok(c)
                }) {
                    Ok(mut client) => {
                        on_change();
                        listen(&mut client, &stopped, &on_change);
                    }
                    Err(_) => std::thread::sleep(RECONNECT),
                }
            }
        });
    ChangeWatch { stop }
}

/// Until the connection is lost or `stop` is set: `on_change` once per burst of notifications.
fn listen(client: &mut Client, stop: &AtomicBool, on_change: &impl Fn()) {
    while !stop.load(Ordering::SeqCst) {
        let got = client.notifications().timeout_iter(WAIT).next();
        match got {
            Ok(Some(_)) => {
                // Those already queued belong to the same reload.
                while let Ok(Some(_)) = client.notifications().iter().next() {}
                on_change();
            }
            Err(_) => return,
            Ok(None) if client.is_closed() => return,
            Ok(None) => {}
        }
    }
}
