//! What changes what Redis holds besides a load's write-back: removal ([`invalidate`], of many
//! keys through [`bulk`]), updates in place ([`update`]), writes the replicas must confirm
//! ([`replicated`], over connections of their own, [`confirm_pool`]), and the removals Redis
//! did not take, kept ([`pending`]) and replayed when it answers again ([`replay`]).

pub(crate) mod bulk;
pub(crate) mod confirm_pool;
pub(crate) mod invalidate;
pub(crate) mod pending;
pub(crate) mod replay;
pub(crate) mod replicated;
pub(crate) mod turns;
pub(crate) mod update;
