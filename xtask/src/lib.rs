//! Developer tooling for vipd. The library part is [`lab`]: throwaway hosts in network
//! namespaces on a bridge, shared by the integration tests, `cargo xtask demo` and the
//! benchmarks; and [`timeline`], which reads vipd's failover timeline back from its logs.

pub mod lab;
pub mod timeline;
