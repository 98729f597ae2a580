//! The stored form of a value: the envelope and its codecs ([`codec`]), the formats a cache or
//! a function chooses ([`format`]), compression ([`compress`]), what a return type stores
//! ([`cacheable`]), what its `None` is written as ([`none_probe`]) and the one-pass reader a hit
//! uses ([`value_first`]).

pub(crate) mod cacheable;
pub(crate) mod codec;
pub(crate) mod compress;
pub(crate) mod format;
pub(crate) mod none_probe;
pub(crate) mod value_first;
