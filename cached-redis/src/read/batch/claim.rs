//! What one id of a batch found before the batch's load: a value, the lease (so the id is
//! loaded with the others this call leads), the lease held by another process (waited for),
//! or a load of the id already running in this process (joined, as a single read would).

use crate::conn::guard::refuses_writes;
use crate::lease::{Acquire, EntryKeys};
use crate::memory::Memory;
use crate::read::flight::{Began, Leader, Role, Shared};
use crate::read::get::{Missed, Read};
use crate::read::lead::Load;
use crate::read::lease_guard::LeaseGuard;
use crate::stats::{Event, Outcome};
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

/// One id's state once its lease script answered.
pub(super) enum Claimed<T> {
    /// A value: this id is answered.
    Found(T),
    /// This call leads the id's load, under `load`'s lease or (Redis unavailable, or
    /// refusing writes) without one: the id is loaded with the batch.
    Leads {
        leader: Leader,
        load: Load,
        keys: EntryKeys,
    },
    /// Another process holds the id's lease: this call waits for its holder, as a single
    /// read does, and loads the id alone only if the holder stores nothing.
    Waits {
        leader: Leader,
        keys: EntryKeys,
        missed: Missed,
    },
    /// A load of the id runs in this process already, or its entry is due for a refresh: the
    /// single read's path answers it, from what was read.
    Single { value_key: String, read: Read<T> },
}

/// One id of a batch read from an in-memory cache.
pub(super) enum InMemory<T> {
    Found(T),
    /// This call leads the id's load: it is loaded with the batch.
    Leads {
        leader: Leader,
        key: String,
    },
    /// A load of the id runs in this process: the single read's path joins it.
    Single(String),
}

impl Cache {
    /// Counts one id of a batch answered by its entry, as a single read's hit is counted.
    pub(super) fn note_batch_hit(&self, policy: &Policy) {
        let stats = &self.inner.stats;
        stats.note(Event::Hit, policy.name());
        stats.note_call(Outcome::Hit, policy.name());
    }

    /// The lease of one id a batch read found no usable value for (one script, sent with the
    /// other ids' so that they share a round trip), or what the read found.
    pub(super) async fn claim<T: CacheValue>(
        &self,
        value_key: String,
        began: Began,
        read: Read<T>,
        policy: &Policy,
    ) -> Claimed<T> {
        let stats = &self.inner.stats;
        let missed = match read {
            Read::Hit(value, _) => {
                self.note_batch_hit(policy);
                return Claimed::Found(value);
            }
            Read::Missed(missed) => missed,
            due @ Read::Due(_) => {
                return Claimed::Single {
                    value_key,
                    read: due,
                };
            }
        };
        let leader = match self.inner.flights.join_or_lead(&value_key, began) {
            Role::Lead(leader) => leader,
            // Joined again on the single path (which counts the miss): the flight may have
            // ended by then, and that path reads again.
            Role::Join(_) => {
                let read = Read::Missed(missed);
                return Claimed::Single { value_key, read };
            }
        };
        match self.unless_covered(&value_key, missed) {
            Missed::Unavailable => {
                stats.note(Event::Fallback, policy.name());
                let keys = EntryKeys::unleased(value_key);
                unleased(leader, keys, Outcome::Fallback)
            }
            missed => {
                stats.note(Event::Miss, policy.name());
                let keys = EntryKeys::for_value(value_key);
                self.lease_one(leader, keys, policy, missed).await
            }
        }
    }

    /// One attempt at the lease: a value another process stored meanwhile answers; a lease
    /// held elsewhere is waited for afterwards, alongside the batch's load.
    async fn lease_one<T: CacheValue>(
        &self,
        leader: Leader,
        keys: EntryKeys,
        policy: &Policy,
        missed: Missed,
    ) -> Claimed<T> {
        let stats = &self.inner.stats;
        let after_miss = matches!(missed, Missed::Absent { corrupt: None });
        let corrupt = missed.into_corrupt();
        let claim = LeaseGuard::claim(self, &keys, self.lock_ms_for(policy));
        let mut claim = claim.after_miss(after_miss);
        let (reply, joined) = claim.acquire(corrupt.as_deref(), || leader.joined()).await;
        match reply {
            Ok(Acquire::Leased) => {
                let lease = Some(claim);
                let load = Load {
                    lease,
                    outcome: Outcome::Miss,
                };
                Claimed::Leads { leader, load, keys }
            }
            Ok(Acquire::Value(bytes)) => match codec::decode(&bytes) {
                Ok(value) => {
                    leader.finish(Shared::found(bytes, joined));
                    stats.note_call(Outcome::Waited, policy.name());
                    Claimed::Found(value)
                }
                Err(e) => {
                    self.undecodable(&keys.value, policy.name(), &e);
                    let missed = Missed::Absent {
                        corrupt: Some(bytes),
                    };
                    Claimed::Waits {
                        leader,
                        keys,
                        missed,
                    }
                }
            },
            Ok(Acquire::HeldFor { .. }) => Claimed::Waits {
                leader,
                keys,
                missed: Missed::Absent { corrupt },
            },
            Err(e) if refuses_writes(&e) => {
                stats.note(Event::WritesRefused, policy.name());
                unleased(leader, keys, Outcome::WritesRefused)
            }
            Err(_) => {
                stats.note(Event::Fallback, policy.name());
                unleased(leader, keys, Outcome::Fallback)
            }
        }
    }

    /// One id of a batch read from an in-memory cache: its live entry, or this call leads its
    /// load, or joins the one running (on the single path).
    pub(super) fn claim_in_memory<T: CacheValue>(
        &self,
        memory: &Memory,
        value_key: String,
        began: Began,
        policy: &Policy,
    ) -> InMemory<T> {
        let stats = &self.inner.stats;
        if let Some(found) = memory.get(&value_key) {
            match codec::decode(found.bytes()) {
                Ok(value) => {
                    self.note_batch_hit(policy);
                    return InMemory::Found(value);
                }
                Err(e) => self.undecodable(&value_key, policy.name(), &e),
            }
        }
        match self.inner.flights.join_or_lead(&value_key, began) {
            Role::Lead(leader) => {
                stats.note(Event::Miss, policy.name());
                InMemory::Leads {
                    leader,
                    key: value_key,
                }
            }
            Role::Join(_) => InMemory::Single(value_key),
        }
    }
}

/// A load without the lease: Redis could not be asked, or refused the write.
fn unleased<T>(leader: Leader, keys: EntryKeys, outcome: Outcome) -> Claimed<T> {
    let load = Load {
        lease: None,
        outcome,
    };
    Claimed::Leads { leader, load, keys }
}
