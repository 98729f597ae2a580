//! In-process single flight: one load per key per process; later callers join it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use crate::keyed::KeyHasher;
use crate::read::failures::SharedFailure;

/// What a load's leader hands to the callers that joined it.
#[derive(Debug, Clone)]
pub(crate) enum Shared {
    /// The stored form of the value; each joiner decodes its own copy. `joined` says which
    /// joiners it is fresh for: a value read from Redis, or loaded, after a caller's call
    /// began is newer than any invalidation that returned before that call began. A value stored
    /// under a lease that was still held is fresh for everyone ([`Joined::EVERYONE`]).
    /// `unleased` marks a value whose load started without a lease (Redis unreachable, or
    /// refusing writes): a joiner that could not reach Redis either takes it whenever it
    /// joined, so an outage costs one load per key per process.
    Value {
        bytes: Arc<[u8]>,
        joined: Joined,
        unleased: bool,
    },
    /// An invalidation raced the load: read again.
    Reread,
    /// The load's value is not for sharing (not cached): run the loader yourself.
    LoadYourself,
    /// The load failed; its error belongs to the leader's caller. Run the loader yourself, or,
    /// holding an entry past its TTL within `fail_safe`, answer with it.
    FailedUnshared,
    /// The load failed with this error, which each joiner takes a clone of
    /// ([`Failures`](super::failures::Failures)), on the terms of a value: `joined` and
    /// `unleased` as there (an error may predate an invalidation a later caller must see).
    Failed {
        error: SharedFailure,
        joined: Joined,
        unleased: bool,
    },
}

impl Shared {
    /// What a load that stores nothing hands its joiners: a clone of its `error` if there is
    /// one to share, for every joiner when nothing could have invalidated the entry during the
    /// load (`unchallenged`: its lease held to the end, or no invalidation in memory), else for
    /// those whose call began before it `started`; without one, each loads for itself, told
    /// whether the load `failed`.
    pub(crate) fn after_failure(
        (error, failed): (Option<SharedFailure>, bool),
        unchallenged: bool,
        started: Joined,
        unleased: bool,
    ) -> Shared {
        let joined = if unchallenged {
            Joined::EVERYONE
        } else {
            started
        };
        match error {
            Some(error) => Shared::Failed {
                error,
                joined,
                unleased,
            },
            None if failed => Shared::FailedUnshared,
            None => Shared::LoadYourself,
        }
    }

    /// A value read from Redis (another process stored it) by a request sent at `joined`.
    pub(crate) fn found(bytes: Vec<u8>, joined: Joined) -> Shared {
        Shared::Value {
            bytes: Arc::from(bytes),
            joined,
            unleased: false,
        }
    }
}

/// A moment on the flights' clock at which a load started or its Redis read was sent: what
/// it found is fresh for the calls that began before ([`Began`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Joined(u64);

/// When a call began, on the flights' clock ([`Flights::now`]). A joiner is judged by when its
/// call began, not by when it joined: a call whose read took long (a breaker's probe, a slow
/// GET) joins a load late that still started after it began, and may take its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Began(u64);

impl Joined {
    /// Every joiner, whenever it joined: for a value loaded under a lease that was still held
    /// when it was stored.
    pub(crate) const EVERYONE: Joined = Joined(u64::MAX);
}

/// One load in flight: where its result is sent, and how many callers joined it.
#[derive(Debug)]
struct Flight {
    /// Made by the first caller that joins: a load nobody joins (most of them) never makes
    /// one, nor wakes its notifier when it is dropped (some 500 instructions a miss).
    result: OnceLock<watch::Sender<Option<Shared>>>,
    joined: AtomicU64,
    /// Set when its result may be stale for its joiners whatever it is (an invalidation Redis
    /// did not take, or a load past `max_load`): they read again.
    revoked: AtomicBool,
}

type Slot = Arc<Flight>;

/// The flights by value key, shared with their leaders (a write-back may outlive its
/// caller's call), and the clock that orders calls' beginnings and loads' starts.
#[derive(Debug, Default)]
struct Table {
    /// The map and the leader share the key's one copy.
    flights: Mutex<HashMap<Arc<str>, Slot, KeyHasher>>,
    /// Ticks at every load start and every read whose answer is shared.
    clock: AtomicU64,
}

type Map = Arc<Table>;

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot, KeyHasher>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loads in flight in this process, by value key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Map,
}

/// A caller's part in a flight.
#[derive(Debug)]
pub(crate) enum Role {
    Lead(Leader),
    Join(Joiner),
}

/// A caller waiting for another caller's load in this process.
#[derive(Debug)]
pub(crate) struct Joiner {
    result: watch::Receiver<Option<Shared>>,
    /// When its call began.
    began: Began,
}

impl Flights {
    /// Now, on the clock loads are judged by: taken when a call begins, before it reads.
    pub(crate) fn now(&self) -> Began {
        Began(self.map.clock.load(Ordering::SeqCst))
    }

    /// Joins the load of `key` in flight, or leads one, for a call that began at `began`.
    pub(crate) fn join_or_lead(&self, key: &str, began: Began) -> Role {
        let mut map = self.map.lock();
        if let Some(slot) = map.get(key) {
            slot.joined.fetch_add(1, Ordering::SeqCst);
            return Role::Join(Joiner {
                result: slot
                    .result
                    .get_or_init(|| watch::Sender::new(None))
                    .subscribe(),
                began,
            });
        }
        let slot: Slot = Arc::new(Flight {
            result: OnceLock::new(),
            joined: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
        });
        let key: Arc<str> = Arc::from(key);
        map.insert(Arc::clone(&key), slot.clone());
        Role::Lead(Leader {
            flights: self.map.clone(),
            key,
            slot,
            registered: true,
        })
    }

    /// Revokes the loads in flight of the keys `covered` accepts: new callers start a load of
    /// their own, and those that joined read again, whatever the loads answer.
    pub(crate) fn revoke_where(&self, covered: impl Fn(&str) -> bool) {
        let mut map = self.map.lock();
        map.retain(|key, slot| {
            if !covered(key) {
                return true;
            }
            slot.revoke();
            false
        });
    }

    /// How many loads are in flight (for tests of cleanup).
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// The caller running a load. Dropping it (cancellation, panic) removes the flight and closes
/// it, so joiners start over instead of waiting.
#[derive(Debug)]
pub(crate) struct Leader {
    flights: Map,
    key: Arc<str>,
    slot: Slot,
    registered: bool,
}

impl Leader {
    /// Now, on the flights' clock, which ticks. Taken just before a load starts or a Redis
    /// read whose answer may be shared is sent, it names the joiners that answer is fresh
    /// enough for: those whose call began before.
    pub(crate) fn joined(&self) -> Joined {
        Joined(self.flights.clock.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Whether no caller joined (once closed: none ever will).
    pub(crate) fn nobody_joined(&self) -> bool {
        self.slot.joined.load(Ordering::SeqCst) == 0
    }

    /// Stops new callers from joining; those already joined still get [`Leader::finish`]'s result.
    pub(crate) fn close(&mut self) {
        if !self.registered {
            return;
        }
        self.registered = false;
        let mut map = self.flights.lock();
        if map
            .get(&*self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&*self.key);
        }
    }

    /// Gives up on sharing this load: new callers start their own, and those that joined read
    /// again. The leader's own caller still gets its result; a later [`Leader::finish`] reaches
    /// nobody.
    pub(crate) fn abandon(&mut self) {
        self.close();
        self.slot.revoke();
    }

    /// Hands the result to the joiners (unless the load was revoked: then they read again).
    pub(crate) fn finish(mut self, shared: Shared) {
        self.close();
        // Closed, nobody joins any more: without a channel nobody joined.
        let Some(result) = self.slot.result.get() else {
            return;
        };
        // Under the channel's lock, as a revocation is: one is never overwritten.
        let revoked = &self.slot.revoked;
        result.send_if_modified(|result| {
            if revoked.load(Ordering::SeqCst) {
                return false;
            }
            *result = Some(shared);
            true
        });
    }
}

impl Flight {
    /// Its joiners read again, and a later [`Leader::finish`] reaches nobody.
    fn revoke(&self) {
        // Without a channel nobody joined; the flag still stops a later `finish`.
        let Some(channel) = self.result.get() else {
            self.revoked.store(true, Ordering::SeqCst);
            return;
        };
        channel.send_modify(|result| {
            self.revoked.store(true, Ordering::SeqCst);
            *result = Some(Shared::Reread);
        });
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for the leader's result; `None` when the leader went away without one. A value this
/// joiner may not take becomes [`Shared::Reread`]; `redis_ok` says whether the joiner's own
/// read reached Redis.
pub(crate) async fn wait(mut joiner: Joiner, redis_ok: bool) -> Option<Shared> {
    let shared = joiner
        .result
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|s| s.clone())?;
    Some(match shared {
        Shared::Value {
            joined, unleased, ..
        } if joiner.began.0 >= joined.0 && (redis_ok || !unleased) => Shared::Reread,
        Shared::Failed {
            joined, unleased, ..
        } if joiner.began.0 >= joined.0 && (redis_ok || !unleased) => Shared::Reread,
        shared => shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn joiners_get_the_result_and_late_callers_lead_again() {
        let flights = Flights::default();
        let Role::Lead(mut leader) = flights.join_or_lead("k", flights.now()) else {
            panic!("first caller leads")
        };
        let Role::Join(rx) = flights.join_or_lead("k", flights.now()) else {
            panic!("second caller joins")
        };
        leader.close();
        assert!(matches!(
            flights.join_or_lead("k", flights.now()),
            Role::Lead(_)
        ));
        leader.finish(Shared::Reread);
        assert!(matches!(wait(rx, true).await, Some(Shared::Reread)));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_value_read_before_a_call_began_is_not_handed_to_it() {
        let flights = Flights::default();
        let Role::Lead(leader) = flights.join_or_lead("k", flights.now()) else {
            panic!("first caller leads")
        };
        let Role::Join(early) = flights.join_or_lead("k", flights.now()) else {
            panic!("second caller joins")
        };
        let joined = leader.joined();
        let Role::Join(late) = flights.join_or_lead("k", flights.now()) else {
            panic!("third caller joins")
        };
        leader.finish(Shared::Value {
            bytes: Arc::from(&b"v"[..]),
            joined,
            unleased: false,
        });
        assert!(matches!(
            wait(early, true).await,
            Some(Shared::Value { .. })
        ));
        assert!(matches!(wait(late, true).await, Some(Shared::Reread)));
    }

    #[tokio::test]
    async fn during_an_outage_a_late_joiner_takes_an_unleased_value() {
        let flights = Flights::default();
        let Role::Lead(leader) = flights.join_or_lead("k", flights.now()) else {
            panic!("first caller leads")
        };
        let joined = leader.joined();
        let Role::Join(reached_redis) = flights.join_or_lead("k", flights.now()) else {
            panic!("joins")
        };
        let Role::Join(could_not) = flights.join_or_lead("k", flights.now()) else {
            panic!("joins")
        };
        leader.finish(Shared::Value {
            bytes: Arc::from(&b"v"[..]),
            joined,
            unleased: true,
        });
        assert!(matches!(
            wait(reached_redis, true).await,
            Some(Shared::Reread)
        ));
        assert!(matches!(
            wait(could_not, false).await,
            Some(Shared::Value { .. })
        ));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_joiners() {
        let flights = Flights::default();
        let leader = flights.join_or_lead("k", flights.now());
        let Role::Join(rx) = flights.join_or_lead("k", flights.now()) else {
            panic!("second caller joins")
        };
        drop(leader);
        assert!(wait(rx, true).await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
