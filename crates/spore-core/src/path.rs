use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Longest path accepted in a collection, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single component, in bytes (the usual file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative path inside a collection that is safe to join under any
/// destination directory: `/`-separated, no empty, `.` or `..` components, no
/// leading `/`, no backslashes, NUL or other control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelativePath(String);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute")]
    Absolute(String),
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("path {0:?} has a `.` or `..` component")]
    DotComponent(String),
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    #[error("path {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("path is {0} bytes long, the limit is {MAX_PATH_LEN}")]
    TooLong(usize),
    #[error("a component of {0:?} is longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong(String),
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

impl RelativePath {
    pub fn new(path: impl Into<String>) -> Result<Self, PathError> {
        let path = path.into();
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(path.len()));
        }
        if path.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter(path));
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute(path));
        }
        if path.contains('\\') {
            return Err(PathError::Backslash(path));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(PathError::EmptyComponent(path)),
                "." | ".." => return Err(PathError::DotComponent(path)),
                c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::ComponentTooLong(path)),
                _ => {}
            }
        }
        Ok(Self(path))
    }

    /// Builds a relative path from the components of a file-system path
    /// relative to an imported directory.
    pub fn from_fs(path: &std::path::Path) -> Result<Self, PathError> {
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                std::path::Component::Normal(part) => match part.to_str() {
                    Some(part) => parts.push(part),
                    None => return Err(PathError::NotUtf8(path.display().to_string())),
                },
                std::path::Component::CurDir => {}
                _ => return Err(PathError::DotComponent(path.display().to_string())),
            }
        }
        Self::new(parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The path to write this entry to under `root`; never outside `root`.
    pub fn to_fs_path(&self, root: &std::path::Path) -> PathBuf {
        let mut out = root.to_path_buf();
        out.extend(self.components());
        out
    }

    /// True when `self` is a strict ancestor directory of `other`.
    pub fn is_ancestor_of(&self, other: &RelativePath) -> bool {
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }
}

impl TryFrom<String> for RelativePath {
    type Error = PathError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RelativePath> for String {
    fn from(value: RelativePath) -> Self {
        value.0
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_nested_paths() {
        for ok in [
            "a",
            "a/b/c.txt",
            "naïve café/ünïcode.mkv",
            "dir/.hidden",
            "a..b",
            "..a",
        ] {
            assert!(RelativePath::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_paths() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute("/etc/passwd".into())),
            ("../x", PathError::DotComponent("../x".into())),
            ("a/../../x", PathError::DotComponent("a/../../x".into())),
            ("a/./b", PathError::DotComponent("a/./b".into())),
            ("a//b", PathError::EmptyComponent("a//b".into())),
            ("a/", PathError::EmptyComponent("a/".into())),
            ("..\\x", PathError::Backslash("..\\x".into())),
            ("a\nb", PathError::ControlCharacter("a\nb".into())),
            ("a\0b", PathError::ControlCharacter("a\0b".into())),
            (
                "a\u{1b}[31m",
                PathError::ControlCharacter("a\u{1b}[31m".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(RelativePath::new(input), Err(expected), "{input:?}");
        }
        assert!(matches!(
            RelativePath::new("x".repeat(256)),
            Err(PathError::ComponentTooLong(_))
        ));
        assert!(matches!(
            RelativePath::new("a/".repeat(3000)),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn fs_path_stays_under_root() {
        let p = RelativePath::new("a/b/c").unwrap();
        assert_eq!(
            p.to_fs_path(std::path::Path::new("/dest")),
            PathBuf::from("/dest/a/b/c")
        );
        assert_eq!(
            RelativePath::from_fs(std::path::Path::new("./x/y"))
                .unwrap()
                .as_str(),
            "x/y"
        );
        assert!(RelativePath::from_fs(std::path::Path::new("../y")).is_err());
    }

    #[test]
    fn ancestry() {
        let a = RelativePath::new("a").unwrap();
        assert!(a.is_ancestor_of(&RelativePath::new("a/b").unwrap()));
        assert!(!a.is_ancestor_of(&RelativePath::new("ab").unwrap()));
        assert!(!a.is_ancestor_of(&a));
    }
}
