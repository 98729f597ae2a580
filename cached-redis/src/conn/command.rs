//! Commands over keys, built with their buffers allocated once at their final size.
//!
//! `redis::cmd(name).arg(key)` allocates its buffers for the name and grows them for the key:
//! on a hit that growing was about 330 of a call's 22,200 instructions (callgrind, the
//! benchmark's table 12), a quarter of what a hit spent over a plain `GET` and decode.

/// `name` followed by `keys`, one argument each: `redis::cmd(name).arg(keys)`, built without
/// growing.
pub(crate) fn keyed<K: AsRef<str>>(name: &str, keys: &[K]) -> redis::Cmd {
    let bytes = keys.iter().map(|key| key.as_ref().len()).sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(1 + keys.len(), name.len() + bytes);
    cmd.arg(name);
    for key in keys {
        cmd.arg(key.as_ref());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::keyed;

    #[test]
    fn packs_as_the_growing_builder_does() {
        for keys in [&[][..], &["k"], &["ns:{user:1}", "ns:{user:2}", ""]] {
            let mut grown = redis::cmd("MGET");
            grown.arg(keys);
            assert_eq!(
                keyed("MGET", keys).get_packed_command(),
                grown.get_packed_command()
            );
        }
    }
}
