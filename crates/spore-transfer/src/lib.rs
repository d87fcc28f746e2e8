//! Transfer logic as pure state machines: no I/O, no clock of its own (`now`
//! is always an argument), so every decision can be tested exhaustively and
//! simulated at scale. The node drives these over real streams.
//!
//! - `wire`: frames of the `/spore/blob/1` protocol, encoded and decoded with
//!   strict size limits (spec: `docs/protocol.md`).
//! - `scheduler`: which chunk groups to ask which peer for, and when.
//! - `holders`: how many of the peers connected to us hold each group, so
//!   an uploader serves the rarest requests first.
//! - `choker`: which peers may download from us, and how fast.
//! - `superseed`: what a seed announces to each of several concurrent
//!   downloaders, so that it hands out every piece once before any twice.

pub mod choker;
pub mod holders;
pub mod scheduler;
pub mod superseed;
pub mod wire;
