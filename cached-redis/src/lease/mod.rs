//! The lease on an entry: its Redis names and the scripts over it (the guard its holder keeps
//! while loading is the read path's, `read/lease_guard.rs`).

pub(crate) mod after_miss;
pub(crate) mod call;
pub(crate) mod scripts;

pub(crate) use scripts::{
    Acquire, compare_and_set, compare_and_set_eval, invalidate, invalidate_eval, read_revoking,
};

use crate::Key;
use crate::key::spare;

/// The Redis names of one entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryKeys {
    pub(crate) value: String,
    pub(crate) lease: String,
    pub(crate) channel: String,
}

/// The Redis key of an entry's value: `<namespace>:{<key>}`. The only name a hit needs.
pub(crate) fn value_key(namespace: &str, key: &Key) -> ValueKey {
    let key = key.as_str();
    let mut value = spare::take();
    value.reserve(namespace.len() + key.len() + 3);
    value.push_str(namespace);
    value.push_str(":{");
    value.push_str(key);
    value.push('}');
    ValueKey(value)
}

/// An entry's value key, in one of the thread's spare buffers: a call renders one and drops
/// it, and the buffer is the next call's.
pub(crate) struct ValueKey(String);

impl ValueKey {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// A key rendered elsewhere (a batch renders all of its keys before reading them).
    pub(crate) fn owned(value: String) -> ValueKey {
        ValueKey(value)
    }

    /// The key as a `String` of its own: its buffer is not handed back.
    pub(crate) fn into_string(mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for ValueKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for ValueKey {
    #[inline]
    fn drop(&mut self) {
        spare::give_back(std::mem::take(&mut self.0));
    }
}

/// Whether a Redis key is an entry's lease (`<value key>:lease`): a value key ends with its
/// closing brace.
pub(crate) fn is_lease_key(redis_key: &str) -> bool {
    redis_key.ends_with("}:lease")
}

impl EntryKeys {
    /// All names of the entry whose value key is `value`.
    pub(crate) fn for_value(value: String) -> EntryKeys {
        EntryKeys {
            lease: suffixed(&value, ":lease"),
            channel: suffixed(&value, ":wake"),
            value,
        }
    }

    /// The names of an entry whose load takes no lease (Redis could not be read): the value
    /// key only, the lease's and the channel's left empty, since nothing is sent for them.
    pub(crate) fn unleased(value: String) -> EntryKeys {
        EntryKeys {
            value,
            lease: String::new(),
            channel: String::new(),
        }
    }

    pub(crate) fn new(namespace: &str, key: &Key) -> EntryKeys {
        EntryKeys::for_value(value_key(namespace, key).into_string())
    }
}

/// `value` followed by `suffix`, allocated once (`format!` costs a miss ~600 instructions more
/// per name).
fn suffixed(value: &str, suffix: &str) -> String {
    let mut name = String::with_capacity(value.len() + suffix.len());
    name.push_str(value);
    name.push_str(suffix);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_and_lease_share_a_hash_tag() {
        let keys = EntryKeys::new("app", &Key::raw("user:42:v1"));
        assert_eq!(keys.value, "app:{user:42:v1}");
        assert_eq!(keys.lease, "app:{user:42:v1}:lease");
        assert_eq!(keys.channel, "app:{user:42:v1}:wake");
        assert!(is_lease_key(&keys.lease));
        assert!(!is_lease_key(&keys.value));
        let tricky = EntryKeys::new("app", &Key::raw("x}:lease"));
        assert!(!is_lease_key(&tricky.value), "{}", tricky.value);
    }
}
