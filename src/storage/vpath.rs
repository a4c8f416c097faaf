//! Virtual paths: the client's view of a path inside its home directory.
//!
//! Pure: no I/O. Resolving a client argument here is the first half of the jail (`..` can never
//! climb above `/`); `file_store` maps the result onto the disk and guards against symlinks.

use std::fmt;

/// The longest argument or resolved path accepted, in bytes (Linux `PATH_MAX`).
const MAX_LEN: usize = 4096;

/// An absolute, normalised path inside a user's home, as the client sees it: "/" or "/a/b".
///
/// Never contains empty, "." or ".." components, NUL, CR or LF, and has no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VPath(String);

/// Why a client path argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The argument contains NUL, CR or LF.
    #[error("file name not allowed")]
    InvalidName,
    /// The argument or the resolved path is longer than 4096 bytes.
    #[error("path too long")]
    TooLong,
}

impl VPath {
    /// The home directory itself, "/".
    pub fn root() -> VPath {
        VPath("/".to_owned())
    }

    /// Resolve a client argument against `self` (the cwd). Absolute args start from "/".
    ///
    /// ".." never climbs above "/" (like a chroot). "//", "/./" and a trailing "/" are
    /// normalised away; an empty argument yields `self`. Backslash is an ordinary character.
    ///
    /// # Errors
    ///
    /// [`PathError::InvalidName`] if `arg` contains NUL, CR or LF; [`PathError::TooLong`] if
    /// `arg` or the result is longer than 4096 bytes.
    pub fn resolve(&self, arg: &str) -> Result<VPath, PathError> {
        if arg.contains(['\0', '\r', '\n']) {
            return Err(PathError::InvalidName);
        }
        if arg.len() > MAX_LEN {
            return Err(PathError::TooLong);
        }
        let mut parts: Vec<&str> = if arg.starts_with('/') {
            Vec::new()
        } else {
            self.components().collect()
        };
        for part in arg.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        let mut path = String::with_capacity(self.0.len() + arg.len() + 1);
        for part in &parts {
            path.push('/');
            path.push_str(part);
        }
        if path.is_empty() {
            path.push('/');
        }
        if path.len() > MAX_LEN {
            return Err(PathError::TooLong);
        }
        Ok(VPath(path))
    }

    /// The path as text: "/" or "/a/b".
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the home directory itself.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The containing directory; `None` for the root.
    pub fn parent(&self) -> Option<VPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(idx) if idx > 0 => Some(VPath(self.0[..idx].to_owned())),
            _ => Some(VPath::root()),
        }
    }

    /// The final component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components().next_back()
    }

    /// The components from the root down, e.g. `["a", "b"]` for "/a/b"; none for the root.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/').filter(|part| !part.is_empty())
    }
}

impl fmt::Display for VPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cwd: &str) -> VPath {
        VPath::root().resolve(cwd).expect("valid test cwd")
    }

    #[test]
    fn resolve_table() {
        let cases = [
            // (cwd, arg, expected)
            ("/", "", "/"),
            ("/a/b", "", "/a/b"),
            ("/", "..", "/"),
            ("/a", "..", "/"),
            ("/a/b", "..", "/a"),
            ("/", "../../x", "/x"),
            ("/a", "../../x", "/x"),
            ("/a/b", "/../x", "/x"),
            ("/", "a//b/", "/a/b"),
            ("/", "./a/./b", "/a/b"),
            ("/", "/", "/"),
            ("/a/b", "/", "/"),
            ("/a/b", "/c/d", "/c/d"),
            ("/a/b", "//c//d//", "/c/d"),
            ("/a", "b/c", "/a/b/c"),
            ("/a", "./b", "/a/b"),
            ("/a", "b/../../..", "/"),
            ("/a", "...", "/a/..."),
            ("/a", "..x", "/a/..x"),
            ("/", "a\\..\\b", "/a\\..\\b"),
            ("/", "sp ace", "/sp ace"),
        ];
        for (cwd, arg, expected) in cases {
            let got = at(cwd).resolve(arg);
            assert_eq!(
                got.as_ref().map(VPath::as_str),
                Ok(expected),
                "cwd {cwd:?} arg {arg:?}"
            );
        }
    }

    #[test]
    fn control_characters_refused() {
        for arg in ["a\0b", "a\rb", "a\nb", "\n", "/x/\0"] {
            assert_eq!(
                VPath::root().resolve(arg),
                Err(PathError::InvalidName),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn too_long_refused() {
        let long_arg = "a/".repeat(MAX_LEN);
        assert_eq!(VPath::root().resolve(&long_arg), Err(PathError::TooLong));
        // Each step is short but the result grows past the limit.
        let mut path = VPath::root();
        let name = "n".repeat(1000);
        let mut result = Ok(());
        for _ in 0..5 {
            match path.resolve(&name) {
                Ok(next) => path = next,
                Err(err) => result = Err(err),
            }
        }
        assert_eq!(result, Err(PathError::TooLong));
        assert!(path.as_str().len() <= MAX_LEN);
    }

    #[test]
    fn accessors() {
        let root = VPath::root();
        assert!(root.is_root());
        assert_eq!(root.parent(), None);
        assert_eq!(root.file_name(), None);
        assert_eq!(root.components().count(), 0);
        assert_eq!(root.to_string(), "/");

        let path = at("/a/b/c");
        assert!(!path.is_root());
        assert_eq!(path.parent(), Some(at("/a/b")));
        assert_eq!(at("/a").parent(), Some(root));
        assert_eq!(path.file_name(), Some("c"));
        assert_eq!(path.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(path.to_string(), "/a/b/c");
    }
}
