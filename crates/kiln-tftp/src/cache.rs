//! In-memory cache of served files, so 200 machines booting at once read the
//! iPXE binary from disk once.
//!
//! Keyed by canonical path; an entry is valid while the file's mtime and
//! length are unchanged (a replaced file is read again). Loads are
//! single-flight: concurrent requests for the same version share one read.
//! Entries are evicted least-recently-used beyond a byte budget; running
//! transfers keep their `Bytes` alive regardless.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::path::Opened;

struct Entry {
    mtime: Option<SystemTime>,
    len: u64,
    cell: Arc<OnceCell<Bytes>>,
    last_used: u64,
}

pub(crate) struct FileCache {
    entries: Mutex<(u64, HashMap<PathBuf, Entry>)>,
    budget: u64,
    /// Disk reads done (for tests and debugging).
    reads: AtomicU64,
}

impl FileCache {
    pub(crate) fn new(budget: u64) -> Self {
        FileCache {
            entries: Mutex::new((0, HashMap::new())),
            budget,
            reads: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The contents of `opened`, from memory when this version was read before.
    pub(crate) async fn get(&self, opened: Opened) -> io::Result<Bytes> {
        if opened.len > self.budget {
            return self.read(opened).await;
        }
        let cell = {
            let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let (clock, map) = &mut *guard;
            *clock += 1;
            let now = *clock;
            match map.get_mut(&opened.real) {
                Some(e) if e.mtime == opened.mtime && e.len == opened.len => {
                    e.last_used = now;
                    e.cell.clone()
                }
                _ => {
                    map.remove(&opened.real);
                    evict(map, self.budget - opened.len);
                    let cell = Arc::new(OnceCell::new());
                    let entry = Entry {
                        mtime: opened.mtime,
                        len: opened.len,
                        cell: cell.clone(),
                        last_used: now,
                    };
                    map.insert(opened.real.clone(), entry);
                    cell
                }
            }
        };
        cell.get_or_try_init(|| self.read(opened)).await.cloned()
    }

    async fn read(&self, opened: Opened) -> io::Result<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let Opened { file, len, .. } = opened;
        tokio::task::spawn_blocking(move || {
            // Read exactly the length we keyed on, even if the file grows meanwhile.
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.take(len).read_to_end(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Drop least-recently-used entries until at most `keep` bytes remain.
fn evict(map: &mut HashMap<PathBuf, Entry>, keep: u64) {
    let mut total: u64 = map.values().map(|e| e.len).sum();
    while total > keep {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        if let Some(e) = map.remove(&oldest) {
            total -= e.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::open_under;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-tftp-cache-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::canonicalize(d).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_loads_read_once_and_changes_reload() {
        let root = tmp("once");
        std::fs::write(root.join("ipxe"), vec![7u8; 100_000]).unwrap();
        let cache = Arc::new(FileCache::new(1 << 30));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            let root = root.clone();
            tasks.push(tokio::spawn(async move {
                let o = open_under(&root, "ipxe").unwrap();
                cache.get(o).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().len(), 100_000);
        }
        assert_eq!(cache.reads(), 1);

        std::fs::write(root.join("ipxe"), b"new").unwrap();
        let got = cache.get(open_under(&root, "ipxe").unwrap()).await.unwrap();
        assert_eq!(&got[..], b"new");
        assert_eq!(cache.reads(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn budget_evicts_least_recently_used() {
        let root = tmp("lru");
        for name in ["a", "b", "c"] {
            std::fs::write(root.join(name), [0u8; 40]).unwrap();
        }
        let cache = FileCache::new(100);
        let get = |n: &str| cache.get(open_under(&root, n).unwrap());
        get("a").await.unwrap();
        get("b").await.unwrap();
        get("a").await.unwrap(); // a is now newer than b
        assert_eq!(cache.reads(), 2);
        get("c").await.unwrap(); // evicts b
        get("a").await.unwrap();
        assert_eq!(cache.reads(), 3);
        get("b").await.unwrap();
        assert_eq!(cache.reads(), 4);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
