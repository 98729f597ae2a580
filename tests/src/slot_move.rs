//! A cluster slot moved by hand, step by step, as `redis-cli --cluster reshard` moves it.

use crate::RedisCluster;

/// A slot moving from the primary on `from` to the one on `to`, in the steps
/// `redis-cli --cluster reshard` takes: both sides told, the keys moved (`MIGRATE`), the new
/// owner announced.
#[derive(Debug)]
pub struct SlotMove<'a> {
    cluster: &'a RedisCluster,
    slot: String,
    from: u16,
    to: u16,
}

impl<'a> SlotMove<'a> {
    /// The move of `key`'s slot from the primary on `from` to the one on `to`.
    pub fn of(cluster: &'a RedisCluster, key: &str, from: u16, to: u16) -> SlotMove<'a> {
        let slot = cluster.cli(from, &["CLUSTER", "KEYSLOT", key]);
        SlotMove {
            cluster,
            slot: slot.trim().to_owned(),
            from,
            to,
        }
    }

    fn id(&self, port: u16) -> String {
        self.cluster
            .cli(port, &["CLUSTER", "MYID"])
            .trim()
            .to_owned()
    }

    /// `IMPORTING` on the new owner, `MIGRATING` on the old: a command for a key the old owner
    /// no longer has is answered `ASK`.
    pub fn begin(&self) {
        let (cluster, slot) = (self.cluster, self.slot.as_str());
        let (from_id, to_id) = (self.id(self.from), self.id(self.to));
        let importing = cluster.cli(
            self.to,
            &["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id],
        );
        assert!(importing.contains("OK"), "{importing}");
        let migrating = cluster.cli(
            self.from,
            &["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id],
        );
        assert!(migrating.contains("OK"), "{migrating}");
    }

    /// Moves the slot's keys (at most 100) from the old owner to the new (`MIGRATE`).
    pub fn move_keys(&self) {
        let keys = self
            .cluster
            .cli(self.from, &["CLUSTER", "GETKEYSINSLOT", &self.slot, "100"]);
        let keys: Vec<&str> = keys.split_whitespace().collect();
        if !keys.is_empty() {
            let to_port = self.to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let migrated = self.cluster.cli(self.from, &args);
            assert!(migrated.contains("OK"), "MIGRATE: {migrated}");
        }
    }

    /// How many keys of the slot the primary on `port` holds.
    pub fn keys_at(&self, port: u16) -> u64 {
        let count = self
            .cluster
            .cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &self.slot]);
        count.trim().parse().expect("a count")
    }

    /// How many commands the two primaries have answered `TRYAGAIN`.
    pub fn refusals(&self) -> u64 {
        [self.from, self.to]
            .into_iter()
            .map(|port| {
                let stats = self.cluster.cli(port, &["INFO", "errorstats"]);
                stats
                    .lines()
                    .find_map(|line| line.strip_prefix("errorstat_TRYAGAIN:count="))
                    .map_or(0, |count| count.trim().parse().expect("a count"))
            })
            .sum()
    }

    /// Every primary told the slot's new owner: commands for it are answered `MOVED`.
    pub fn finish(&self) {
        let to_id = self.id(self.to);
        for port in self.cluster.primaries() {
            self.cluster
                .cli(port, &["CLUSTER", "SETSLOT", &self.slot, "NODE", &to_id]);
        }
    }
}
