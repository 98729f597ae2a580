//! A script's call: one `EVALSHA` built straight into its command, run again while a
//! cluster's slot is moving, and after loading the script where Redis no longer has it.
//!
//! redis-rs's `ScriptInvocation` copies each key and argument into a vector of its own before
//! it builds the command, a value being written back included: on a miss, about 3,000 of the
//! call's instructions (callgrind) went to those copies and their frees.

use std::time::Duration;

use redis::{Cmd, ErrorKind, FromRedisValue, Script, ServerErrorKind, ToRedisArgs};

/// Arguments a script of ours takes at most, besides its keys.
const MOST_ARGS: usize = 5;

/// Room for a number argument: a `u64`'s digits.
pub(crate) const NUMBER: usize = 20;

/// A script's `EVALSHA`, its keys given, its arguments added by [`Call::arg`].
pub(crate) struct Call<'s> {
    script: &'s Script,
    cmd: Cmd,
}

impl<'s> Call<'s> {
    /// The call of `script` over `keys`, with room for `room` bytes of arguments.
    pub(crate) fn new(script: &'s Script, keys: &[&str], room: usize) -> Call<'s> {
        let named = keys.iter().map(|key| key.len()).sum::<usize>();
        let hash = script.get_hash();
        // "EVALSHA", the hash, the number of keys (one digit), the keys and the arguments.
        let mut cmd = Cmd::with_capacity(3 + keys.len() + MOST_ARGS, 8 + hash.len() + named + room);
        cmd.arg("EVALSHA").arg(hash).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        Call { script, cmd }
    }

    /// Adds an argument (`ARGV[i]`).
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the call, again while a cluster answers that its slot is moving: a script over
    /// keys of a migrating slot, some moved or absent, is refused (`TRYAGAIN`) until the move
    /// ends, which a reshard does in moments; the caller's deadline (`op_timeout`) bounds
    /// those retries. An `ASK` or `MOVED` reaches here only when redis-rs's cluster connection
    /// had no retry left to follow it, mid-reshard, or from a single Redis that is a cluster
    /// node owning another slot, which no retry mends: such a redirect is sent again
    /// [`REDIRECTS`] times at most, then returned. A Redis without the script (restarted,
    /// `SCRIPT FLUSH`ed, a new primary) is sent it (`SCRIPT LOAD`), once, and the call goes on
    /// as before: a slot that started moving meanwhile is waited for too.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        let mut pause = Duration::from_millis(5);
        let (mut loaded, mut redirects) = (false, 0);
        loop {
            let error = match self.cmd.query_async(conn).await {
                Err(error) => error,
                answered => return answered,
            };
            match error.kind() {
                ErrorKind::Server(ServerErrorKind::NoScript) if !loaded => {
                    self.script.prepare_invoke().load_async(conn).await?;
                    loaded = true;
                    continue;
                }
                ErrorKind::Server(ServerErrorKind::TryAgain) => {}
                ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::Moved)
                    if redirects < REDIRECTS =>
                {
                    redirects += 1;
                }
                _ => return Err(error),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// How many times a redirect redis-rs handed back is sent again (after 5, 10, 20 and 40 ms):
/// enough for a reshard's slot to settle, little for a redirect that never will.
const REDIRECTS: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_redis_rs_invocation_does() {
        let script = Script::new("return {KEYS[1], ARGV[1]}");
        let mut ours = Call::new(&script, &["ns:{k}", "ns:{k}:lease"], 3);
        ours.arg("tok").arg(1500u64).arg(&b"\xff\x00bytes"[..]);
        let mut packed = Vec::new();
        // What redis-rs's invocation sends (`ScriptInvocation::eval_cmd`).
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(script.get_hash())
            .arg(2)
            .arg("ns:{k}")
            .arg("ns:{k}:lease")
            .arg("tok")
            .arg(1500u64)
            .arg(&b"\xff\x00bytes"[..]);
        eval.write_packed_command(&mut packed);
        assert_eq!(ours.cmd.get_packed_command(), packed);
    }
}
