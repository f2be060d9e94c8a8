//! Secret references (`env:NAME`, `file:PATH`, or a literal) and the
//! [`Secret`] newtype they resolve into.
//!
//! A resolved secret never prints: its `Debug` is `[redacted]` and it has no
//! `Display`. Resolution errors name the variable or file, never the value.

use std::fmt;
use std::path::Path;

/// A resolved secret value. Compare with [`Secret::ct_eq`].
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Secret {
    /// Wraps bytes that are already resolved (tests, generated values).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The raw bytes, for handing to a signing or verifying key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality, so comparing secrets leaks no timing.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

/// Resolves a reference: `env:NAME` reads an environment variable,
/// `file:PATH` reads a file (relative paths are relative to `base_dir`, the
/// config file's directory), anything else is the literal value.
/// One trailing newline is removed from files, as editors add one.
pub fn resolve(reference: &str, base_dir: &Path) -> Result<Secret, String> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        match std::env::var_os(name) {
            Some(v) => v.into_encoded_bytes(),
            None => return Err(format!("environment variable {name} is not set")),
        }
    } else if let Some(path) = reference.strip_prefix("file:") {
        let full = base_dir.join(path);
        let mut bytes = std::fs::read(&full)
            .map_err(|e| format!("cannot read file {}: {e}", full.display()))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        bytes
    } else {
        reference.as_bytes().to_vec()
    };
    if value.is_empty() {
        return Err("is empty".into());
    }
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from_bytes("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn resolves_env_file_and_literal() {
        let dir = std::env::temp_dir().join(format!("sg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "from-file\n").unwrap();
        assert_eq!(resolve("file:s.txt", &dir).unwrap().expose(), b"from-file");
        assert_eq!(resolve("literal", &dir).unwrap().expose(), b"literal");
        std::env::set_var("SG_SECRET_TEST_VAR", "from-env");
        assert_eq!(
            resolve("env:SG_SECRET_TEST_VAR", &dir).unwrap().expose(),
            b"from-env"
        );
        let err = resolve("env:SG_SECRET_SURELY_UNSET", &dir).unwrap_err();
        assert!(err.contains("SG_SECRET_SURELY_UNSET"));
        assert!(resolve("file:missing.txt", &dir).is_err());
        assert!(resolve("", &dir).is_err());
    }
}
