//! What changes an in-memory cache: an update in place (with the same checks as on Redis),
//! and removals by key, prefix, template or all.

use super::Memory;
use crate::stored::format::Format;
use crate::{Cache, CacheValue};

impl Cache {
    /// An update of `value_key`'s entry in memory, in the caller's turn: applied and written
    /// back if the entry is live and nothing wrote or invalidated it meanwhile (`true`), else
    /// the entry is removed (`false`), as on Redis.
    pub(crate) fn update_in_memory<V: CacheValue>(
        &self,
        memory: &Memory,
        value_key: &str,
        format: Option<Format>,
        mut change: impl FnMut(&mut V) -> bool,
    ) -> bool {
        let begun = memory.begin(value_key);
        let written = memory.get(value_key).is_some_and(|found| {
            let mut origin = None;
            match self.rewrite(value_key, found.bytes(), &mut origin, format, &mut change) {
                Ok(bytes) => memory.replace(begun, &found, bytes),
                Err(_) => false,
            }
        });
        if !written {
            // Nothing cached, a change that does not apply, or a write in between: a load in
            // flight may have read the data before the change.
            memory.invalidate(value_key);
        }
        written
    }

    /// Removes the in-memory entries whose Redis-form key `matches` accepts, and refuses the
    /// loads of such keys under way.
    pub(crate) fn remove_in_memory(&self, memory: &Memory, matches: impl Fn(&str) -> bool) -> u64 {
        memory.invalidate_matching(matches)
    }
}
