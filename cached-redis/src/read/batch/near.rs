//! A batch's hits: the ids a near copy answers, taken first, and those its read found, each
//! kept near under the ticket taken before the read was sent.

use crate::local::versions::Ticket;
use crate::read::get::Read;
use crate::read::near::NearUse;
use crate::stored::none_probe::{Shape, shape};
use crate::{Cache, CacheValue, Policy};

use super::loader::{Failed, Part};

/// A near copy's value as the batch's part: absent when it is a `None` (a single-id function
/// returning `Option` keeps its copy of an entry stored as absent), as the entry read from
/// Redis would be.
fn present<V: CacheValue>(value: V) -> Option<V> {
    match shape(&value) {
        Shape::None => None,
        _ => Some(value),
    }
}

impl Cache {
    /// The ids answered by near copies (counted), and the rest to ask Redis for, each with
    /// the ticket its read is kept under (taken before the read is sent), if it may be kept.
    pub(super) fn near_first<V: CacheValue>(
        &self,
        near: Option<&NearUse<'_, V>>,
        value_keys: Vec<String>,
        policy: &Policy,
    ) -> (Vec<Part<V>>, Asked) {
        let mut parts = Vec::with_capacity(value_keys.len());
        let mut asked = Asked::default();
        for (i, key) in value_keys.into_iter().enumerate() {
            let Some(near) = near else {
                parts.push(Err(Failed));
                asked.push(i, key, None);
                continue;
            };
            let namespaced = key_in_namespace(&key, &self.inner.namespace);
            match near.get(namespaced) {
                Some(value) => {
                    self.inner.stats.note_near_hit(policy.name());
                    parts.push(Ok(present(value)));
                }
                None => {
                    parts.push(Err(Failed));
                    let ticket = near.ticket(namespaced);
                    asked.push(i, key, ticket);
                }
            }
        }
        (parts, asked)
    }

    /// The hits' parts, counted (each kept near, under its ticket, where it may be), and the
    /// others, with their places, keys and what their reads found.
    pub(super) fn hits_first<V>(
        &self,
        parts: &mut [Part<V>],
        asked: Asked,
        reads: Vec<Read<Option<V>>>,
        near: Option<&NearUse<'_, V>>,
        policy: &Policy,
    ) -> Missing<V> {
        let mut missing = Vec::new();
        let each = asked.places.into_iter().zip(asked.keys).zip(asked.tickets);
        for (((i, key), ticket), read) in each.zip(reads) {
            match read {
                Read::Hit(value, expires) => {
                    if let (Some(near), Some(ticket), Some(expires), Some(value)) =
                        (near, ticket, expires, &value)
                    {
                        let namespaced = key_in_namespace(&key, &self.inner.namespace);
                        near.keep(namespaced, ticket, value, expires);
                    }
                    self.note_batch_hit(policy);
                    parts[i] = Ok(value);
                }
                read => missing.push((i, key, read)),
            }
        }
        missing
    }
}

/// The ids a batch asks Redis for: their places among the ids, their value keys and the
/// tickets their reads may be kept near under.
#[derive(Default)]
pub(super) struct Asked {
    places: Vec<usize>,
    pub(super) keys: Vec<String>,
    pub(super) tickets: Vec<Option<Ticket>>,
}

impl Asked {
    fn push(&mut self, place: usize, key: String, ticket: Option<Ticket>) {
        self.places.push(place);
        self.keys.push(key);
        self.tickets.push(ticket);
    }
}

/// The key a near copy of the entry `value_key` is kept by: the rendered key, without the
/// namespace around it (`<namespace>:{<key>}`).
fn key_in_namespace<'a>(value_key: &'a str, namespace: &str) -> &'a str {
    let inner = value_key.get(namespace.len() + 2..value_key.len().saturating_sub(1));
    inner.unwrap_or(value_key)
}

/// The ids a read found no hit for: each with its place among the ids, its key and what its
/// read found.
pub(super) type Missing<V> = Vec<(usize, String, Read<Option<V>>)>;
