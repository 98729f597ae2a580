//! Process-local copies of entries, shared by the near cache and the in-memory cache: the
//! bounded map ([`store`]) and the versions that guard what enters it and what it serves
//! ([`versions`]: a flush epoch and one counter per stripe of keys), and the clock their
//! hits read ([`clock`]).

pub(crate) mod clock;
pub(crate) mod store;
pub(crate) mod versions;
