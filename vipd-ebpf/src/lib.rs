#![no_std]
// Present so that `vipd` can list this crate as a build-dependency: cargo then rebuilds
// the XDP object whenever this crate or vipd-common changes. The program is in main.rs.
