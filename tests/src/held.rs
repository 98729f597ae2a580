//! Reads whose timing a test controls: a load that takes its key's lease and holds it until the
//! test releases it, and a read that reports when it was answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What a read answered, and when.
pub type Answered = (Result<String, String>, Instant);

fn policy() -> Policy {
    Policy::new("row", Duration::from_secs(60)).expect("a valid policy")
}

/// A read of `key` through `cache` whose loader answers `value`, in the background.
pub fn timed_read(cache: &Cache, key: &Key, value: &str) -> JoinHandle<Answered> {
    let (cache, key, value) = (cache.clone(), key.clone(), value.to_owned());
    tokio::spawn(async move {
        let got = cache.fetch(&key, &policy(), async move { Ok(value) }).await;
        (got, Instant::now())
    })
}

/// A read whose loader (it holds the lease once it runs) waits for [`HeldLoad::finish`].
#[derive(Debug)]
pub struct HeldLoad {
    release: Arc<Notify>,
    task: JoinHandle<Answered>,
}

impl HeldLoad {
    /// Starts the read; its loader will answer `value` when released.
    pub fn start(cache: &Cache, key: &Key, value: &str) -> HeldLoad {
        let release = Arc::new(Notify::new());
        let (cache, key, value, held) = (
            cache.clone(),
            key.clone(),
            value.to_owned(),
            release.clone(),
        );
        let task = tokio::spawn(async move {
            let loader = async move {
                held.notified().await;
                Ok(value)
            };
            let got = cache.fetch(&key, &policy(), loader).await;
            (got, Instant::now())
        });
        HeldLoad { release, task }
    }

    /// Lets the loader answer and returns what the read answered, and when (after the store).
    pub async fn finish(self) -> Answered {
        self.release.notify_one();
        self.task.await.expect("the held read")
    }
}
