//! Turning text into keywords: the one rule every part of search shares
//! (local index, query, routing filters, DHT keys), so that a word that
//! matches in one place matches in all of them.
//!
//! A keyword is a maximal run of alphanumeric characters (Unicode), lower
//! cased, at least [`MIN_WORD_CHARS`] characters and at most
//! [`MAX_WORD_BYTES`] bytes long. `debian-12.5.0-amd64-netinst.iso` gives
//! `debian`, `12`, `amd64`, `netinst`, `iso` (a lone `5` or `0` is too short).

/// Shorter runs are not keywords (they would match almost everything).
pub const MIN_WORD_CHARS: usize = 2;
/// Longer runs are cut to this many bytes (at a character boundary).
pub const MAX_WORD_BYTES: usize = 64;

/// The keywords of `text`, in order, without duplicates.
pub fn keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        if run.chars().count() < MIN_WORD_CHARS {
            continue;
        }
        let word = truncate(&run.to_lowercase());
        if !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

fn truncate(word: &str) -> String {
    if word.len() <= MAX_WORD_BYTES {
        return word.to_owned();
    }
    let mut end = MAX_WORD_BYTES;
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    word[..end].to_owned()
}

/// Whether `word` is already in the form [`keywords`] produces.
pub fn is_keyword(word: &str) -> bool {
    keywords(word).first().is_some_and(|k| k == word) && word.chars().all(char::is_alphanumeric)
}

/// The extension of a file name, lower cased, if it has a short one.
pub fn extension(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty()
        || ext.is_empty()
        || ext.len() > 10
        || !ext.chars().all(char::is_alphanumeric)
    {
        return None;
    }
    Some(ext.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_into_lowercase_words() {
        assert_eq!(
            keywords("Debian-12.5.0-AMD64-netinst.iso"),
            ["debian", "12", "amd64", "netinst", "iso"]
        );
        assert_eq!(keywords("Über Café Über"), ["über", "café"]);
        assert!(keywords("a . - _").is_empty());
    }

    #[test]
    fn long_words_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let words = keywords(&long);
        assert_eq!(words.len(), 1);
        assert!(words[0].len() <= MAX_WORD_BYTES);
        assert!(is_keyword(&words[0]));
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("talk.MKV").as_deref(), Some("mkv"));
        assert_eq!(extension("dir/archive.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("README"), None);
        assert!(!is_keyword("Big"));
        assert!(is_keyword("big"));
        assert!(!is_keyword("a b"));
    }
}
