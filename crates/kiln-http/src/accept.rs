//! The accept loop both listeners (plain HTTP and TLS) run: admission against the caps, one
//! task per connection, and a graceful stop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use crate::limits::{Admission, refused};

/// Accepts until `shutdown`, handing each admitted connection to `handle` with a receiver that
/// turns true when the server stops (connections finish the response they are sending, idle
/// ones close); then returns once every connection has ended. A connection over a cap is
/// closed as soon as it is accepted. `name` labels the listener in logs.
pub(crate) async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    admission: Arc<Admission>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(name, e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                refused(&admission, why, peer.ip());
                drop(stream);
                continue;
            }
        };
        let connection = handle(stream, peer, stop_rx.clone());
        let done = done_rx.clone();
        tokio::spawn(async move {
            connection.await;
            drop((permit, done));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// Per-connection errors (the peer reset before we accepted) are nothing; others (out of
/// file descriptors) get a pause so the loop does not spin.
async fn accept_failed(listener: &str, e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    warn!(error = %e, "{listener} accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
