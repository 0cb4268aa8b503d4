//! Content hashes in the reference's `"<algorithm>:<hex digest>"` form.

mod canonical;
mod loads;

use std::{
    io::{self, Read},
    path::{Path, PathBuf},
};

use ring::digest::{self, Algorithm, Context};

pub use self::canonical::{canonical_json, python_json};
pub use self::loads::json_loads;

/// A hash that could not be computed or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The file could not be read.
    #[error("failed to hash `{}`", path.display())]
    ReadFile {
        /// The file being hashed.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The expected hash has no `<algorithm>:` prefix.
    #[error("malformed hash `{expected}`, expected `<algorithm>:<hex digest>`")]
    Malformed {
        /// The hash as given.
        expected: String,
    },
    /// The expected hash names an algorithm this build cannot compute.
    #[error("unsupported hash algorithm `{algorithm}`")]
    UnsupportedAlgorithm {
        /// The algorithm as named.
        algorithm: String,
    },
}

impl HashError {
    /// A next step for whoever reads the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::ReadFile { .. } => None,
            Self::Malformed { .. } | Self::UnsupportedAlgorithm { .. } => Some(format!(
                "supported algorithms: {}",
                ALGORITHM_NAMES.join(", ")
            )),
        }
    }
}

/// The algorithms [`verify_hash`] accepts, under Python's `hashlib` names.
const ALGORITHM_NAMES: [&str; 5] = ["sha256", "sha384", "sha512", "sha512_256", "sha1"];

fn algorithm(name: &str) -> Option<&'static Algorithm> {
    // hashlib.new() looks names up without regard to case, so `SHA256:…` verifies
    // in the reference too.
    Some(match name.to_ascii_lowercase().as_str() {
        "sha256" => &digest::SHA256,
        "sha384" => &digest::SHA384,
        "sha512" => &digest::SHA512,
        "sha512_256" => &digest::SHA512_256,
        "sha1" => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        _ => return None,
    })
}

fn hex(digest: &digest::Digest) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = digest.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out
}

/// The SHA-256 hash of `content`, as `sha256:<64 lowercase hex digits>`.
pub fn hash_bytes(content: &[u8]) -> String {
    format!("sha256:{}", hex(&digest::digest(&digest::SHA256, content)))
}

/// The SHA-256 hash of a file's bytes, read in chunks so a large file is never
/// held in memory; the same string [`hash_bytes`] gives for its content.
pub fn hash_file(path: impl AsRef<Path>) -> Result<String, HashError> {
    let path = path.as_ref();
    let read_error = |source| HashError::ReadFile {
        path: path.to_owned(),
        source,
    };
    let mut file = fs_err::File::open(path).map_err(read_error)?;
    let mut context = Context::new(&digest::SHA256);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(filled) => context.update(&buffer[..filled]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(read_error(error)),
        }
    }
    Ok(format!("sha256:{}", hex(&context.finish())))
}

/// Whether `content` hashes to `expected`, an `<algorithm>:<hex digest>` string.
///
/// As in the reference, the digest must match exactly, lowercase hex, while the
/// algorithm name may be in any case.
pub fn verify_hash(content: &[u8], expected: &str) -> Result<bool, HashError> {
    let (name, expected_digest) = expected
        .split_once(':')
        .ok_or_else(|| HashError::Malformed {
            expected: expected.to_owned(),
        })?;
    let algorithm = algorithm(name).ok_or_else(|| HashError::UnsupportedAlgorithm {
        algorithm: name.to_owned(),
    })?;
    Ok(hex(&digest::digest(algorithm, content)) == expected_digest)
}

/// The reference's `hash_dict_canonical`: the SHA-256 hash of
/// [`canonical_json`]'s text, byte for byte the hash Python computes from
/// `json.dumps(data, sort_keys=True, separators=(",", ":"))`.
///
/// The reference hashes `data or {}`, so not only `null` but every value Python
/// finds false (`false`, `0`, `0.0`, `""`, `[]`) hashes like an empty object.
pub fn hash_dict_canonical(data: &serde_json::Value) -> String {
    let text = if is_python_falsy(data) {
        "{}".to_owned()
    } else {
        canonical_json(data)
    };
    hash_bytes(text.as_bytes())
}

/// Python's truthiness of a JSON value (`not value`), which the reference leans
/// on with `value or default` and `bool(value)`.
pub fn is_python_falsy(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => true,
        Value::Bool(value) => !value,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(entries) => entries.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_bytes_of_nothing_is_the_well_known_empty_digest() {
        assert_eq!(
            hash_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_hash_accepts_other_algorithms_and_any_case_in_their_names() {
        let sha512 = format!("SHA512:{}", hex(&digest::digest(&digest::SHA512, b"abc")));
        assert!(verify_hash(b"abc", &sha512).unwrap());
        assert!(!verify_hash(b"abd", &sha512).unwrap());
    }
}
