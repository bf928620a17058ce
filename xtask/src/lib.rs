//! Developer tooling for vipd. The library part is [`lab`]: throwaway hosts in network
//! namespaces on a bridge, shared by the integration tests, `cargo xtask demo` and the
//! benchmarks; [`timeline`], which reads vipd's failover timeline back from its logs; and
//! [`pcap`], which reads `tcpdump -w` captures and decodes the frames in them.

pub mod lab;
pub mod pcap;
pub mod timeline;
