//! Machines behind one BMC (blades, 2U4N nodes, partitions) take turns reading their power
//! state while they wait for a change: one read at a time per BMC, at least [`MIN_GAP`] apart,
//! so a batch confirming at once does not multiply the polling a small BMC has to answer.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use tokio::time::{Duration, Instant};

/// The least time between two confirmation reads of one BMC.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(100);

/// One BMC's turn-taking: when its last read ended. tokio's mutex is fair, so waiters are served
/// in order and no machine starves.
#[derive(Default)]
pub(crate) struct Gate {
    last: tokio::sync::Mutex<Option<Instant>>,
}

/// The right to read now; the read's end is noted when it is dropped.
pub(crate) struct Turn<'a> {
    last: tokio::sync::MutexGuard<'a, Option<Instant>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.last = Some(Instant::now());
    }
}

impl Gate {
    pub(crate) async fn turn(&self) -> Turn<'_> {
        let last = self.last.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + MIN_GAP).await;
        }
        Turn { last }
    }
}

/// Gates by BMC address (`https://host:port`), alive while some driver holds one.
static GATES: LazyLock<Mutex<HashMap<String, Weak<Gate>>>> = LazyLock::new(Default::default);

pub(crate) fn for_bmc(address: &str) -> Arc<Gate> {
    let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gate) = gates.get(address).and_then(Weak::upgrade) {
        return gate;
    }
    gates.retain(|_, g| g.strong_count() > 0);
    let gate = Arc::new(Gate::default());
    gates.insert(address.to_string(), Arc::downgrade(&gate));
    gate
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[tokio::test(start_paused = true)]
    async fn machines_behind_one_bmc_take_turns() {
        let reads: Arc<StdMutex<Vec<(usize, Instant)>>> = Arc::default();
        let tasks: Vec<_> = (0..3)
            .map(|machine| {
                let reads = Arc::clone(&reads);
                tokio::spawn(async move {
                    let gate = for_bmc("https://10.9.9.9");
                    for _ in 0..3 {
                        let _turn = gate.turn().await;
                        reads.lock().unwrap().push((machine, Instant::now()));
                        // A read takes a while; nobody else reads meanwhile.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let reads = reads.lock().unwrap();
        assert_eq!(reads.len(), 9);
        for pair in reads.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(gap >= MIN_GAP + Duration::from_millis(30), "{reads:?}");
        }
        // Fair: each machine reads once per round.
        let order: Vec<usize> = reads.iter().map(|(m, _)| *m).collect();
        for round in order.chunks(3) {
            let mut r = round.to_vec();
            r.sort();
            assert_eq!(r, [0, 1, 2], "{order:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_bmcs_do_not_wait() {
        let a = for_bmc("https://10.9.9.10");
        let b = for_bmc("https://10.9.9.11");
        assert!(Arc::ptr_eq(&a, &for_bmc("https://10.9.9.10")));
        let start = Instant::now();
        let _ta = a.turn().await;
        let _tb = b.turn().await;
        assert_eq!(Instant::now(), start);
    }
}
