//! The spore node: where its files live and, as the node grows, the daemon
//! that wires the store and the network together.

mod home;

pub use home::{Home, HomeError};
