//! The spore node: where its files live, its configuration, and the running
//! node that wires the content store and the network together. The HTTP API
//! (spore-http) and the CLI (spore-cli) drive it.

mod api_access;
mod config;
mod home;
mod node;
pub mod search;
pub mod transfer;

pub use api_access::{ApiEndpoint, api_token};
pub use config::{ApiConfig, ConfigError, DEFAULT_API_PORT, NodeConfig};
pub use home::{Home, HomeError};
pub use node::{Node, NodeError};
