//! What a search finds: an item a peer shares, described by a
//! [`RecordBody`] and signed by that peer ([`SignedRecord`]), so that peers
//! that forward results cannot forge or alter them.
//!
//! The publisher is an Ed25519 public key (the same key as the peer's libp2p
//! identity, so its peer id follows from it). The signature covers
//! [`RECORD_CONTEXT`] followed by the postcard encoding of the body.

use ed25519_dalek::{Signature, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use spore_core::Hash;

use crate::words;

/// Domain separation for record signatures.
pub const RECORD_CONTEXT: &[u8] = b"spore-search-record/1";
/// Longest item name (a file name or a path inside a collection), in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// What kind of item a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItemKind {
    /// A blob added on its own.
    Blob,
    /// A collection (a directory); its name is the directory's.
    Collection,
    /// A file inside a collection; `parent` names the collection.
    File,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Blob => "blob",
            ItemKind::Collection => "collection",
            ItemKind::File => "file",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blob" => Some(ItemKind::Blob),
            "collection" | "dir" => Some(ItemKind::Collection),
            "file" => Some(ItemKind::File),
            _ => None,
        }
    }
}

/// A coarse media type, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Media {
    Video,
    Audio,
    Image,
    Document,
    Archive,
    Other,
}

impl Media {
    pub const ALL: [Media; 6] = [
        Media::Video,
        Media::Audio,
        Media::Image,
        Media::Document,
        Media::Archive,
        Media::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Media::Video => "video",
            Media::Audio => "audio",
            Media::Image => "image",
            Media::Document => "document",
            Media::Archive => "archive",
            Media::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The media type of a file name, by its extension.
    pub fn of_name(name: &str) -> Self {
        let Some(ext) = words::extension(name) else {
            return Media::Other;
        };
        match ext.as_str() {
            "mkv" | "mp4" | "webm" | "avi" | "mov" | "m4v" | "mpg" | "mpeg" | "wmv" | "flv"
            | "ts" | "ogv" => Media::Video,
            "mp3" | "flac" | "ogg" | "opus" | "wav" | "m4a" | "aac" | "wma" | "aiff" => {
                Media::Audio
            }
            "jpg" | "jpeg" | "png" | "gif" | "webp" | "svg" | "bmp" | "tif" | "tiff" | "avif"
            | "heic" => Media::Image,
            "pdf" | "txt" | "md" | "epub" | "doc" | "docx" | "odt" | "rtf" | "html" | "htm"
            | "tex" | "djvu" | "mobi" => Media::Document,
            "zip" | "tar" | "gz" | "xz" | "zst" | "bz2" | "7z" | "rar" | "iso" | "img" | "deb"
            | "rpm" | "dmg" => Media::Archive,
            _ => Media::Other,
        }
    }
}

/// One shared item, as the publisher describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The content id (what `spore get` takes).
    pub id: Hash,
    /// A file name, or a path inside the collection for `File`.
    pub name: String,
    pub size: u64,
    pub kind: ItemKind,
    /// The collection a `File` belongs to.
    pub parent: Option<Hash>,
}

impl RecordBody {
    /// The keywords this item is found by (its name's; for a file inside a
    /// collection, the whole path's).
    pub fn keywords(&self) -> Vec<String> {
        words::keywords(&self.name)
    }

    pub fn media(&self) -> Media {
        if self.kind == ItemKind::Collection {
            return Media::Other;
        }
        Media::of_name(&self.name)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = RECORD_CONTEXT.to_vec();
        // Encoding a struct of plain fields to a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Why this body is not acceptable from the network, if it is not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_BYTES {
            return Err("item name empty or too long");
        }
        if self.name.chars().any(char::is_control) {
            return Err("item name has control characters");
        }
        if (self.kind == ItemKind::File) != self.parent.is_some() {
            return Err("only files inside a collection have a parent");
        }
        Ok(())
    }
}

/// A body with its publisher's key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub body: RecordBody,
    /// Ed25519 public key of the publishing peer.
    pub publisher: [u8; 32],
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// A signature as one 64-byte string (serde has no impl for `[u8; 64]`).
mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = Deserialize::deserialize(d)?;
        <[u8; 64]>::try_from(bytes).map_err(|_| D::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

impl SignedRecord {
    /// Signs `body` with `key`.
    pub fn sign(body: RecordBody, key: &dyn RecordSigner) -> Self {
        let signature = key.sign(&body.signed_bytes());
        Self {
            body,
            publisher: key.public_key(),
            signature,
        }
    }

    /// Checks the signature and the body's rules.
    pub fn verify(&self) -> bool {
        if self.body.check().is_err() {
            return false;
        }
        let Ok(key) = VerifyingKey::from_bytes(&self.publisher) else {
            return false;
        };
        let sig = Signature::from_bytes(&self.signature);
        key.verify(&self.body.signed_bytes(), &sig).is_ok()
    }
}

/// Something that signs with the node's Ed25519 key (the node's libp2p
/// identity, behind spore-net; a plain [`SigningKey`] in tests).
pub trait RecordSigner: Send + Sync {
    fn public_key(&self) -> [u8; 32];
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

impl RecordSigner for SigningKey {
    fn public_key(&self) -> [u8; 32] {
        self.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        ed25519_dalek::Signer::sign(self, message).to_bytes()
    }
}

/// Verifies a detached Ed25519 signature (for DHT keyword records).
pub fn verify_signature(publisher: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(publisher)
        .is_ok_and(|k| k.verify(message, &Signature::from_bytes(signature)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> RecordBody {
        RecordBody {
            id: Hash::of(b"x"),
            name: "talk.mkv".into(),
            size: 10,
            kind: ItemKind::Blob,
            parent: None,
        }
    }

    #[test]
    fn signed_records_verify_and_tampering_is_caught() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let rec = SignedRecord::sign(body(), &key);
        assert!(rec.verify());
        let mut forged = rec.clone();
        forged.body.size = 11;
        assert!(!forged.verify());
        let mut other = rec.clone();
        other.publisher = SigningKey::from_bytes(&[8; 32]).public_key();
        assert!(!other.verify());
        assert_eq!(rec.body.media(), Media::Video);
    }

    #[test]
    fn file_needs_parent() {
        let mut b = body();
        b.kind = ItemKind::File;
        assert!(b.check().is_err());
        b.parent = Some(Hash::of(b"dir"));
        assert!(b.check().is_ok());
    }
}
