//! `Collection::decode` on untrusted bytes: never panics; whatever decodes is
//! in canonical form (re-encodes to exactly the input), lists only safe,
//! sorted, unique paths, and its accessors work on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spore_core::{Collection, MODE_MASK, RelativePath};

fuzz_target!(|data: &[u8]| {
    let Ok(collection) = Collection::decode(data) else {
        return;
    };
    assert!(Collection::has_magic(data));
    assert_eq!(
        collection.encode(),
        data,
        "a decoded manifest re-encodes differently: the input was not canonical"
    );
    let entries = collection.entries();
    for entry in entries {
        assert_eq!(
            RelativePath::new(entry.path.as_str()).as_ref(),
            Ok(&entry.path),
            "decoded an unsafe path"
        );
        assert_eq!(entry.mode & !MODE_MASK, 0);
        assert_eq!(collection.find(entry.path.as_str()), Some(entry));
    }
    for pair in entries.windows(2) {
        assert!(pair[0].path.as_str().as_bytes() < pair[1].path.as_str().as_bytes());
    }
    for a in entries {
        for b in entries {
            assert!(!a.path.is_ancestor_of(&b.path), "{a:?} is also a directory");
        }
    }
    // Every accessor of a decoded (so untrusted) manifest must be safe to call.
    let _ = collection.total_size();
    assert_eq!(Collection::new(entries.to_vec()).as_ref(), Ok(&collection));
});
