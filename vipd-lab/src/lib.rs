//! The namespace lab of vipd's integration tests, `cargo xtask demo`, the benchmarks and
//! the chaos suite: [`lab`], throwaway hosts in network namespaces on a bridge (vipd,
//! keepalived, FRRouting, tcpdump inside them); [`timeline`], which reads vipd's failover
//! timeline back from its logs; and [`pcap`], which reads `tcpdump -w` captures and
//! decodes the frames in them.

pub mod lab;
pub mod pcap;
pub mod timeline;
