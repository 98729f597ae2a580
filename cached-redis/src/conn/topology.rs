//! What `CLUSTER NODES` says about a cluster: its masters' addresses and the slots each serves,
//! read by bulk removals, which must scan every slot and must not miss one that moves.

/// A cluster master to scan: where to connect (its announced hostname if it has one, so that a
/// TLS certificate issued for the name verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Master {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// The slots one node serves itself, as sorted inclusive ranges.
pub(crate) type Slots = Vec<(u16, u16)>;

/// The masters of one node's view (`<id> <ip:port@cport[,hostname]> <flags> ...` lines):
/// every master not known to have failed (`fail`, `noaddr`), whether it serves slots or not
/// (one importing a slot may hold some of its keys); a suspected one (`fail?`) is kept, to be
/// scanned or to fail the call. Unless their stable slots cover all 16384, an entry may live
/// where no scan can reach: an `Err`.
pub(crate) fn masters(nodes: &str) -> Result<Vec<Master>, String> {
    let mut masters = Vec::new();
    let mut covered = 0usize;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, address, flags, ..] = fields.as_slice() else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr")) {
            continue;
        }
        let Some(master) = parse_address(address) else {
            continue;
        };
        covered += slot_ranges(&fields)
            .iter()
            .map(|(a, b)| usize::from(b - a) + 1)
            .sum::<usize>();
        masters.push(master);
    }
    if covered < 16384 {
        return Err(format!(
            "{} of 16384 slots have no reachable primary (failed over, not yet promoted)",
            16384 - covered
        ));
    }
    Ok(masters)
}

/// The slots the answering node serves, from its own (`myself`) line: an `Err` unless it is a
/// master with no slot migrating to or from it, whose keys a scan could miss.
pub(crate) fn own_slots(nodes: &str) -> Result<Slots, String> {
    let line = nodes
        .lines()
        .find(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("myself"))
        })
        .ok_or("the node did not name itself in CLUSTER NODES")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !fields[2].split(',').any(|f| f == "master") {
        return Err(format!("{} is no longer a primary", fields[1]));
    }
    if fields.iter().skip(8).any(|f| f.starts_with('[')) {
        return Err(format!("a slot is migrating to or from {}", fields[1]));
    }
    Ok(slot_ranges(&fields))
}

/// Checks that the masters' own slots cover every slot exactly once.
pub(crate) fn check_cover(claims: &[Slots]) -> Result<(), String> {
    let mut all: Vec<(u16, u16)> = claims.iter().flatten().copied().collect();
    all.sort_unstable();
    let mut next = 0u32;
    for (from, to) in all {
        if u32::from(from) != next {
            return Err(format!(
                "slot {next} is served by no scanned primary, or by two"
            ));
        }
        next = u32::from(to) + 1;
    }
    if next != 16384 {
        return Err(format!("slot {next} is served by no scanned primary"));
    }
    Ok(())
}

/// A hash tag (the text inside a key's `{...}`) whose slot is among `slots`, for a key that must
/// live on the node serving them; `None` for a node that serves no slot.
pub(crate) fn tag_in(slots: &Slots) -> Option<String> {
    if slots.is_empty() {
        return None;
    }
    // CRC16 spreads short strings over every slot: a node serving one slot takes about
    // 16384 tries, and the bound is far past any that could miss.
    (0u32..1 << 24).map(|n| n.to_string()).find(|tag| {
        let slot = slot_of(tag.as_bytes());
        slots.iter().any(|(from, to)| (*from..=*to).contains(&slot))
    })
}

/// The cluster slot of a key with no hash tag, or of a tag: CRC16 (XMODEM) modulo 16384.
fn slot_of(key: &[u8]) -> u16 {
    let mut crc = 0u16;
    for byte in key {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `ip:port@cport` or `ip:port@cport,hostname`.
fn parse_address(address: &str) -> Option<Master> {
    let (endpoint, hostname) = match address.split_once(',') {
        Some((endpoint, hostname)) => (endpoint, Some(hostname)),
        None => (address, None),
    };
    let (ip, port) = endpoint.split('@').next()?.rsplit_once(':')?;
    let host = hostname.filter(|h| !h.is_empty()).unwrap_or(ip);
    Some(Master {
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

/// The stable slot ranges of a line's fields (from the ninth): `5461`, `0-5460`; a migration
/// in brackets counts none (the slot is counted at its owner).
fn slot_ranges(fields: &[&str]) -> Slots {
    let mut ranges: Slots = fields
        .iter()
        .skip(8)
        .filter(|f| !f.starts_with('['))
        .filter_map(|range| match range.split_once('-') {
            Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
            None => range.parse().ok().map(|slot| (slot, slot)),
        })
        .filter(|(from, to)| to >= from && *to < 16384)
        .collect();
    ranges.sort_unstable();
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b.internal master - 0 0 2 connected 5461-10921 10922 [10923->-d4]
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7002@17002 master,fail? - 0 0 3 connected 10923-16383
e5 127.0.0.1:7004@17004 master,fail - 0 0 3 disconnected
f6 127.0.0.1:7005@17005 master - 0 0 4 connected [10923-<-b2]
";

    fn master(host: &str, port: u16) -> Master {
        Master {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn every_master_not_failed_is_scanned_by_its_announced_name() {
        assert_eq!(
            masters(NODES),
            Ok(vec![
                master("127.0.0.1", 7000),
                master("node-b.internal", 7001),
                master("127.0.0.1", 7002),
                master("127.0.0.1", 7005),
            ]),
            "a suspected master is scanned (or fails the call); one importing a slot too"
        );
        let down = NODES.replace("master,fail? ", "master,fail ");
        assert!(
            masters(&down).is_err(),
            "slots whose primary failed are not silently skipped"
        );
    }

    #[test]
    fn a_node_serves_its_own_slots_unless_one_is_moving() {
        assert_eq!(own_slots(NODES), Ok(vec![(0, 5460)]));
        let migrating = NODES.replace("myself,master", "master").replacen(
            "b2 127.0.0.1:7001@17001,node-b.internal master",
            "b2 127.0.0.1:7001@17001,node-b.internal myself,master",
            1,
        );
        assert!(own_slots(&migrating).unwrap_err().contains("migrating"));
        let demoted = NODES.replace("myself,master", "myself,slave");
        assert!(
            own_slots(&demoted)
                .unwrap_err()
                .contains("no longer a primary")
        );
    }

    #[test]
    fn a_tag_lands_in_the_slots_asked_for() {
        assert_eq!(slot_of(b"123456789"), 0x31C3, "CRC16/XMODEM's check value");
        let redis_slot = |key: &str| redis::cluster_routing::Slot::for_key(key);
        for slots in [
            vec![(0, 5460)],
            vec![(16383, 16383)],
            vec![(7, 7), (9000, 9001)],
        ] {
            let tag = tag_in(&slots).expect("a tag");
            let slot = slot_of(tag.as_bytes());
            assert!(slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)));
            let key = format!("ns:replicated:{{{tag}}}");
            assert_eq!(
                redis_slot(&key),
                redis::cluster_routing::Slot::new(slot).unwrap()
            );
        }
        assert_eq!(tag_in(&Vec::new()), None);
    }

    #[test]
    fn the_masters_slots_must_cover_every_slot_once() {
        let whole = [vec![(0, 5460)], vec![(5461, 10922)], vec![(10923, 16383)]];
        assert_eq!(check_cover(&whole), Ok(()));
        assert!(check_cover(&whole[..2]).is_err(), "a gap");
        let overlap = [vec![(0, 5460)], vec![(5000, 16383)]];
        assert!(check_cover(&overlap).is_err(), "two owners");
    }
}
