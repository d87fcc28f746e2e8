//! The node's configuration: `spore.toml` in the config directory, then
//! command-line flags on top. A missing file means defaults; a malformed one
//! is an error that names the file and the problem.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use spore_net::NetConfig;

use crate::Home;

/// Default port of the local HTTP API (the network uses 5322).
pub const DEFAULT_API_PORT: u16 = 5323;

/// Everything a node can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub net: NetConfig,
    pub api: ApiConfig,
    /// How often every complete blob is announced again in the DHT.
    pub reprovide_interval_secs: u64,
    /// Uploads and downloads: rate limits, slots, sources.
    pub transfer: crate::transfer::TransferConfig,
    /// Keyword search: filter exchange, reindexing, DHT keyword records.
    pub search: crate::search::SearchConfig,
}

/// The local control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API listens; loopback only unless you mean it.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            net: NetConfig::default(),
            api: ApiConfig::default(),
            reprovide_interval_secs: 6 * 3600,
            transfer: crate::transfer::TransferConfig::default(),
            search: crate::search::SearchConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid spore configuration: {message}")]
    Parse { path: PathBuf, message: String },
}

impl NodeConfig {
    /// The configuration file of a home.
    pub fn path(home: &Home) -> PathBuf {
        home.config.join("spore.toml")
    }

    /// Reads `spore.toml` of `home` (defaults when it does not exist) and
    /// points the node's files (identity, address book) into the home.
    pub fn load(home: &Home) -> Result<Self, ConfigError> {
        let path = Self::path(home);
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        config
            .net
            .identity_file
            .get_or_insert_with(|| home.data.join("identity.key"));
        config
            .net
            .address_book_file
            .get_or_insert_with(|| home.state.join("address-book"));
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults_with_files_in_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        let config = NodeConfig::load(&home).unwrap();
        assert_eq!(config.api.listen.port(), DEFAULT_API_PORT);
        assert!(
            config.api.listen.ip().is_loopback(),
            "the API is local by default"
        );
        assert_eq!(
            config.net.identity_file,
            Some(home.data.join("identity.key"))
        );
    }

    #[test]
    fn file_settings_are_read_and_mistakes_named() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        std::fs::create_dir_all(&home.config).unwrap();
        std::fs::write(
            NodeConfig::path(&home),
            "[net]\nlisten_port = 7000\nmdns = false\nbootstrap = [\"/ip4/127.0.0.1/tcp/9\"]\n[api]\nlisten = \"127.0.0.1:7001\"\n",
        )
        .unwrap();
        let config = NodeConfig::load(&home).unwrap();
        assert_eq!(config.net.listen_port, 7000);
        assert!(!config.net.mdns);
        assert_eq!(config.net.bootstrap.len(), 1);
        assert_eq!(config.api.listen.port(), 7001);

        std::fs::write(NodeConfig::path(&home), "[net]\nlisten_prot = 7000\n").unwrap();
        let err = NodeConfig::load(&home).unwrap_err().to_string();
        assert!(
            err.contains("spore.toml") && err.contains("listen_prot"),
            "{err}"
        );
    }
}
