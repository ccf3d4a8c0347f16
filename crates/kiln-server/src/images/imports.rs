//! Imports in progress and lately ended, in memory: a URL import runs as a server task the
//! client polls (`GET /api/v1/images/imports/{id}`). A restart forgets them; the images they
//! made are in the store. When the registry goes (the admin API stops), running downloads
//! are told to stop, so a long download does not hold the server's shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_api::{ApiErrorBody, Image, ImageImport, ImportPhase, ImportState};

/// Ended imports kept for their clients to read the outcome; older ones are forgotten.
const KEEP_ENDED: usize = 64;

#[derive(Default)]
pub struct Imports {
    next: AtomicU64,
    tasks: Mutex<VecDeque<ImportTask>>,
}

/// One import's state, shared by the task doing it and the handlers reporting it.
#[derive(Clone)]
pub struct ImportTask {
    state: Arc<Mutex<ImageImport>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Imports {
    /// Records a new import of `name` from `source`, receiving its bytes.
    pub fn begin(&self, name: &str, source: &str, now_ms: u64) -> ImportTask {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let state = Arc::new(Mutex::new(ImageImport {
            // The start time keeps ids apart across restarts of the server.
            id: format!("{now_ms:x}-{n}"),
            name: name.to_string(),
            source: source.to_string(),
            state: ImportState::Running,
            phase: ImportPhase::Receiving,
            bytes_done: 0,
            bytes_total: None,
            started: kiln_api::time::rfc3339_ms(now_ms),
            compressed_size: None,
            image: None,
            error: None,
        }));
        let task = ImportTask {
            state,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut tasks = lock(&self.tasks);
        while tasks.iter().filter(|t| !t.running()).count() >= KEEP_ENDED {
            match tasks.iter().position(|t| !t.running()) {
                Some(oldest) => tasks.remove(oldest),
                None => break,
            };
        }
        tasks.push_back(task.clone());
        task
    }

    pub fn get(&self, id: &str) -> Option<ImageImport> {
        lock(&self.tasks)
            .iter()
            .map(ImportTask::snapshot)
            .find(|t| t.id == id)
    }
}

impl Drop for Imports {
    fn drop(&mut self) {
        for t in lock(&self.tasks).iter() {
            t.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl ImportTask {
    /// Whether the server is stopping and the import should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    pub fn snapshot(&self) -> ImageImport {
        lock(&self.state).clone()
    }
    fn running(&self) -> bool {
        lock(&self.state).state == ImportState::Running
    }
    pub fn received(&self, bytes: u64, total: Option<u64>) {
        let mut t = lock(&self.state);
        t.bytes_done = bytes;
        t.bytes_total = total.or(t.bytes_total);
    }
    pub fn converting(&self) {
        lock(&self.state).phase = ImportPhase::Converting;
    }
    pub fn succeeded(&self, image: Image, compressed_size: u64) -> ImageImport {
        let mut t = lock(&self.state);
        t.state = ImportState::Succeeded;
        t.phase = ImportPhase::Done;
        t.image = Some(image);
        t.compressed_size = Some(compressed_size);
        t.clone()
    }
    pub fn failed(&self, error: ApiErrorBody) -> ImageImport {
        let mut t = lock(&self.state);
        t.state = ImportState::Failed;
        t.phase = ImportPhase::Done;
        t.error = Some(error);
        t.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> ApiErrorBody {
        ApiErrorBody {
            code: "invalid".into(),
            message: "no".into(),
            details: Vec::new(),
        }
    }

    #[test]
    fn imports_report_progress_and_ended_ones_are_bounded() {
        let imports = Imports::default();
        let first = imports.begin("os", "http://h/os.gz", 1_700_000_000_000);
        let id = first.snapshot().id;
        first.received(10, Some(100));
        first.received(20, None);
        let seen = imports.get(&id).unwrap();
        assert_eq!(
            (seen.state, seen.phase, seen.bytes_done, seen.bytes_total),
            (ImportState::Running, ImportPhase::Receiving, 20, Some(100))
        );
        assert_eq!(seen.started, "2023-11-14T22:13:20.000Z");
        first.converting();
        assert_eq!(imports.get(&id).unwrap().phase, ImportPhase::Converting);
        // A running import is never forgotten, however many end after it.
        for _ in 0..KEEP_ENDED + 5 {
            imports.begin("x", "up", 1).failed(error());
        }
        assert!(imports.get(&id).is_some());
        // The first, running, and at most KEEP_ENDED ended ones.
        assert_eq!(lock(&imports.tasks).len(), KEEP_ENDED + 1);
        let ended = first.failed(error());
        assert_eq!(
            (ended.state, ended.phase),
            (ImportState::Failed, ImportPhase::Done)
        );
        assert!(imports.get("nope").is_none());
        let running = imports.begin("y", "http://h/y", 2);
        assert!(!running.stopping());
        drop(imports);
        assert!(running.stopping());
    }
}
