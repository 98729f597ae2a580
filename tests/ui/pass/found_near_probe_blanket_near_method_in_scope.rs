// Failed on aa6dc53 (found by the adversary, fixed since: the probes' methods are named
// `__cached_redis_near` and `__cached_redis_failures`, which no user trait has). Compiled on
// d1c89bb, before near_by_default. The near probe is a method call, `(&&&NearProbe::<R>::new()).near()`,
// spanned at the return type in the user's function: every trait in scope at the function
// with a method named `near` is a candidate. A user trait implemented for every type (a
// geometry or fuzzy-matching crate's `near`) makes the call ambiguous, or picks the user's
// method where the probe's traits do not apply, and the function no longer compiles though
// it does not say `near`. (The failure probe's `failures()` has the same exposure, and has
// had it since it existed.) A method name no user writes, or a call path that does not go
// through the scope's traits, would not.
use cached_redis::{Cache, redis_cached};

#[derive(Debug)]
pub struct DbError;

pub trait Proximity {
    fn near(&self) -> bool {
        true
    }
}

impl<X: ?Sized> Proximity for X {}

#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache)]
pub async fn row(cache: &Cache, id: u32) -> Result<u32, DbError> {
    Ok(id)
}

// A plain return type: the user's method is picked, and returns `bool`.
#[redis_cached(key = "count:<id>", ttl = "60s", cache = cache)]
pub async fn count(cache: &Cache, id: u32) -> u64 {
    u64::from(id)
}

fn main() {}
