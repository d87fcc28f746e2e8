//! spore-testbed: many hosts on one Linux machine, as network namespaces
//! joined by a bridge, with per-host rate caps (`tc` tbf) and a userspace link
//! emulator for delay, jitter and loss (this kernel has no netem); declarative
//! scenarios that drive the real `spore` binary (or a BitTorrent client) on
//! those hosts, and reports against the Kumar–Ross bound.
//!
//! Pure parts (scenario checking, the bound, the emulator's delay line, the
//! reports) are tested without root; building a network needs root.

pub mod bittorrent;
pub mod bound;
pub mod check;
pub mod emulator;
pub mod net;
pub mod plot;
pub mod report;
pub mod rounds;
pub mod runner;
pub mod scenario;
