//! The example service behind `cargo run -p examples --bin service`, as a library so that its
//! tests can start it.

pub mod service;
