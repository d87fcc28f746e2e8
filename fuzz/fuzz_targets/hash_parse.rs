//! `Hash` parsing: untrusted text never panics, only 64 hex digits parse (in
//! either case), and errors point at what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spore_core::{Hash, HashParseError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match text.parse::<Hash>() {
        Ok(hash) => {
            assert_eq!(text.len(), 64);
            assert_eq!(hash.to_hex(), text.to_ascii_lowercase());
            assert_eq!(hash.to_string().parse::<Hash>(), Ok(hash));
        }
        Err(HashParseError::NotHex { position, found }) => {
            assert!(!found.is_ascii_hexdigit());
            assert_eq!(
                text.get(position..).and_then(|s| s.chars().next()),
                Some(found)
            );
            assert!(text[..position].chars().all(|c| c.is_ascii_hexdigit()));
        }
        Err(HashParseError::Length(n)) => {
            assert_ne!(text.len(), 64);
            assert_eq!(n, text.chars().count());
        }
    }
});
