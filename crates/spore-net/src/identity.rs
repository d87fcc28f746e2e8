//! The node's persistent Ed25519 identity, kept in a key file readable only
//! by its owner (0600).
//!
//! Loading never prints or logs key material, and a key file with wider
//! permissions is tightened (and reported) rather than silently used as is.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use libp2p::{PeerId, identity::Keypair};

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write identity file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("identity file {path} is not a libp2p Ed25519 key: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Signs with the node's Ed25519 identity without handing out the key
/// (for records other crates publish under this peer's name, such as
/// search results). Cheap to clone.
#[derive(Clone)]
pub struct NodeSigner {
    key: libp2p::identity::ed25519::Keypair,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// `None` unless `key` is Ed25519 (spore only creates Ed25519 keys).
    pub(crate) fn new(key: &Keypair) -> Option<Self> {
        key.clone().try_into_ed25519().ok().map(|key| Self { key })
    }

    /// A signer with a fresh random key (tests, throwaway nodes).
    pub fn generate() -> Self {
        Self {
            key: libp2p::identity::ed25519::Keypair::generate(),
        }
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public().to_bytes()
    }

    /// A standard Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.key.sign(message);
        let mut out = [0u8; 64];
        if sig.len() == 64 {
            out.copy_from_slice(&sig);
        }
        out
    }

    pub fn peer_id(&self) -> PeerId {
        libp2p::identity::PublicKey::from(self.key.public()).to_peer_id()
    }
}

/// The peer id of the node whose Ed25519 public key is `key`.
pub fn peer_id_from_ed25519(key: &[u8; 32]) -> Option<PeerId> {
    libp2p::identity::ed25519::PublicKey::try_from_bytes(key)
        .ok()
        .map(|k| libp2p::identity::PublicKey::from(k).to_peer_id())
}

/// Verifies an Ed25519 signature by the node `peer` (whose id embeds its key).
pub fn verify_by_peer(peer: &PeerId, message: &[u8], signature: &[u8]) -> bool {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return false;
    }
    libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest())
        .is_ok_and(|k| k.verify(message, signature))
}

/// Loads the key at `path`, or creates one there (mode 0600) if the file is missing.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => {
            tighten_permissions(path);
            let key =
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Malformed {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            if key.clone().try_into_ed25519().is_err() {
                return Err(IdentityError::Malformed {
                    path: path.to_owned(),
                    reason: format!("key type is {:?}, expected Ed25519", key.key_type()),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            write_new(path, &key)?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write_new(path: &Path, key: &Keypair) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| err(io::Error::other(e.to_string())))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    // Write to a temporary file created 0600, then rename: a crash never
    // leaves a half-written key under the real name.
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&tmp).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(unix)]
fn tighten_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "identity file was readable by others; setting 0600");
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
        }
    }
}

#[cfg(not(unix))]
fn tighten_permissions(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn signer_signs_as_its_peer_id() {
        let key = Keypair::generate_ed25519();
        let signer = NodeSigner::new(&key).unwrap();
        assert_eq!(signer.peer_id(), key.public().to_peer_id());
        assert_eq!(
            peer_id_from_ed25519(&signer.public_key()),
            Some(signer.peer_id())
        );
        let sig = signer.sign(b"hello");
        assert!(verify_by_peer(&signer.peer_id(), b"hello", &sig));
        assert!(!verify_by_peer(&signer.peer_id(), b"hellO", &sig));
        assert!(!verify_by_peer(&PeerId::random(), b"hello", &sig));
    }

    #[test]
    fn garbage_key_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        fs::write(&path, b"not a key at all").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
