//! A versioned stand-in for a database row whose next read can be held between reading and
//! returning, to widen a race with a write deterministically, and which can be made to fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Notify, Semaphore};

/// One row's version, as a database would hold it.
#[derive(Debug)]
pub struct HeldDb {
    version: AtomicU64,
    reads: AtomicU64,
    failing: AtomicBool,
    hold_next: AtomicBool,
    read_started: Notify,
    release: Semaphore,
}

impl HeldDb {
    /// A row at `version`.
    pub fn new(version: u64) -> HeldDb {
        HeldDb {
            version: AtomicU64::new(version),
            reads: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            hold_next: AtomicBool::new(false),
            read_started: Notify::new(),
            release: Semaphore::new(0),
        }
    }

    /// A write: the row's new version.
    pub fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::SeqCst);
    }

    /// How many reads have run.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Makes reads fail (`true`) or succeed again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds the next read after it has read the version, until [`HeldDb::release`]; the
    /// returned future resolves once that read has started.
    pub fn hold_next_read(&self) -> tokio::sync::futures::Notified<'_> {
        self.hold_next.store(true, Ordering::SeqCst);
        self.read_started.notified()
    }

    /// Lets the held read return.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    /// Reads the version (held, if asked for), or fails.
    pub async fn read(&self) -> Result<u64, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err("the database is unavailable".into());
        }
        let version = self.version.load(Ordering::SeqCst);
        if self.hold_next.swap(false, Ordering::SeqCst) {
            self.read_started.notify_one();
            let _permit = self.release.acquire().await.map_err(|e| e.to_string())?;
        }
        Ok(version)
    }
}
