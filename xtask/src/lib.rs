//! Developer tooling for vipd. The library part is [`lab`]: throwaway hosts in network
//! namespaces on a bridge, shared by the integration tests and `cargo xtask demo`.

pub mod lab;
