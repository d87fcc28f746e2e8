//! How a CLI finds and authenticates to a running daemon: the daemon writes
//! its API address to `<state>/api.json` once it listens, and the bearer
//! token lives in `<config>/api-token` (mode 0600, created once, kept across
//! restarts so scripts and the web UI stay logged in).

use std::{
    io::{Read, Write},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::Home;

/// Where a running daemon's API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiEndpoint {
    pub addr: SocketAddr,
    pub pid: u32,
}

impl ApiEndpoint {
    fn path(home: &Home) -> PathBuf {
        home.state.join("api.json")
    }

    /// Records where the daemon listens (replaced atomically).
    pub fn publish(&self, home: &Home) -> std::io::Result<()> {
        std::fs::create_dir_all(&home.state)?;
        let tmp = home.state.join("api.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, Self::path(home))
    }

    /// The daemon's endpoint as last published, if any (it may be stale).
    pub fn read(home: &Home) -> Option<Self> {
        let bytes = std::fs::read(Self::path(home)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn withdraw(home: &Home) {
        let _ = std::fs::remove_file(Self::path(home));
    }
}

/// Reads the API token, creating a random one (0600) on first use.
pub fn api_token(home: &Home) -> std::io::Result<String> {
    let path = home.config.join("api-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(&home.config)?;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase();
    let tmp = home.config.join("api-token.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        let token = api_token(&home).unwrap();
        assert!(token.len() >= 40);
        assert_eq!(api_token(&home).unwrap(), token);
        let mode = std::fs::metadata(home.config.join("api-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn endpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        assert_eq!(ApiEndpoint::read(&home), None);
        let e = ApiEndpoint {
            addr: "127.0.0.1:5323".parse().unwrap(),
            pid: 42,
        };
        e.publish(&home).unwrap();
        assert_eq!(ApiEndpoint::read(&home), Some(e));
        ApiEndpoint::withdraw(&home);
        assert_eq!(ApiEndpoint::read(&home), None);
    }
}
