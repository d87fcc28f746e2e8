//! Where a node keeps its files.
//!
//! By default the XDG directories (`~/.config/spore`, `~/.local/share/spore`,
//! `~/.local/state/spore`); with `--home DIR` everything lives under `DIR`,
//! which is how tests run many nodes on one machine.

use std::path::{Path, PathBuf};

use spore_store::{Store, StoreError};

/// The directories of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub config: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find a home directory; pass --home DIR")]
    NoHome,
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Home {
    /// `--home DIR` when given, else the platform's XDG directories.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self, HomeError> {
        if let Some(dir) = explicit {
            return Ok(Self::under(dir));
        }
        let state = dirs::state_dir().or_else(dirs::data_local_dir);
        match (dirs::config_dir(), dirs::data_dir(), state) {
            (Some(config), Some(data), Some(state)) => Ok(Self {
                config: config.join("spore"),
                data: data.join("spore"),
                state: state.join("spore"),
            }),
            _ => Err(HomeError::NoHome),
        }
    }

    /// Everything under one directory.
    pub fn under(dir: &Path) -> Self {
        Self {
            config: dir.join("config"),
            data: dir.join("data"),
            state: dir.join("state"),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data.join("store")
    }

    /// Opens (creating if needed) the node's content store.
    pub fn open_store(&self) -> Result<Store, HomeError> {
        let dir = self.store_dir();
        std::fs::create_dir_all(&dir).map_err(|source| HomeError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok(Store::open(&dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_home_holds_everything() {
        let home = Home::resolve(Some(Path::new("/h"))).unwrap();
        assert_eq!(home.store_dir(), PathBuf::from("/h/data/store"));
        assert!(home.config.starts_with("/h") && home.state.starts_with("/h"));
    }

    #[test]
    fn store_opens_under_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        home.open_store().unwrap().add_bytes(b"x", "x").unwrap();
        assert!(home.store_dir().join("meta.db").exists());
    }
}
