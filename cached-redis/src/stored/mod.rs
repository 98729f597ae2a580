//! The stored form of a value: the envelope and its codecs ([`codec`]), the formats a cache or
//! a function chooses ([`format`]), compression ([`compress`]), what a return type stores
//! ([`cacheable`]) and what its `None` is written as ([`none_probe`]).

pub(crate) mod cacheable;
pub(crate) mod codec;
pub(crate) mod compress;
pub(crate) mod format;
pub(crate) mod none_probe;
