//! A script's source as the language runtimes take it: one file's text, or
//! a bundle of files with the one that runs.
//!
//! Stored content is a bundle when it begins with [`BUNDLE_MAGIC`], which no
//! source file can (both languages refuse a NUL character in source, and
//! the host refuses one at upload). After the magic come length-prefixed
//! fields: the entry, the number of files, then each file's path and text,
//! in path order, so equal bundles encode (and are cached) alike.

use std::collections::BTreeMap;

/// The first bytes of an encoded bundle.
pub const BUNDLE_MAGIC: &[u8] = b"\0kiln-bundle-1\n";

/// What a language runtime compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One file's text.
    File(String),
    /// Several files.
    Bundle(Bundle),
}

/// Several files: `entry` runs, and imports the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// One of `files`' paths.
    pub entry: String,
    /// Path (from the bundle's root, `/`-separated) to text.
    pub files: BTreeMap<String, String>,
}

/// Why stored content is no source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// One file's text that is not UTF-8.
    #[error("the source is not UTF-8 text")]
    NotUtf8,
    /// A bundle whose fields do not add up.
    #[error("the bundle's encoding is damaged")]
    Damaged,
}

impl Source {
    /// Reads stored content: a bundle's encoding, else one file's text.
    ///
    /// # Errors
    ///
    /// Text that is not UTF-8, or a bundle whose fields do not add up.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, SourceError> {
        match bytes.strip_prefix(BUNDLE_MAGIC) {
            Some(encoded) => Bundle::decode(encoded).map(Self::Bundle),
            None => String::from_utf8(bytes)
                .map(Self::File)
                .map_err(|_| SourceError::NotUtf8),
        }
    }

    /// What [`decode`](Self::decode) reads back.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::File(text) => text.as_bytes().to_vec(),
            Self::Bundle(bundle) => bundle.encode(),
        }
    }

    /// Feeds what identifies this source to a hash: a file's text alone (so
    /// a one-file script's key is what it always was), a bundle's encoding.
    pub(crate) fn hash_into(&self, hasher: &mut blake3::Hasher) {
        match self {
            Self::File(text) => {
                hasher.update(text.as_bytes());
            }
            // Field by field, as `encode` lays them out: a run hashes its
            // source, and a bundle may be megabytes, so it is not copied.
            Self::Bundle(bundle) => bundle.write_fields(&mut |bytes| {
                hasher.update(bytes);
            }),
        };
    }
}

impl From<String> for Source {
    fn from(text: String) -> Self {
        Self::File(text)
    }
}

impl From<&str> for Source {
    fn from(text: &str) -> Self {
        Self::File(text.to_owned())
    }
}

impl Bundle {
    /// The total bytes of its paths and texts.
    pub fn size(&self) -> usize {
        self.files.iter().map(|(p, t)| p.len() + t.len()).sum()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            BUNDLE_MAGIC.len() + self.size() + 8 * self.files.len() + self.entry.len() + 8,
        );
        self.write_fields(&mut |bytes| out.extend_from_slice(bytes));
        out
    }

    /// The encoding, piece by piece: the magic, then each length-prefixed
    /// field.
    fn write_fields(&self, sink: &mut dyn FnMut(&[u8])) {
        fn field(sink: &mut dyn FnMut(&[u8]), bytes: &[u8]) {
            sink(&len_prefix(bytes.len()));
            sink(bytes);
        }
        sink(BUNDLE_MAGIC);
        field(sink, self.entry.as_bytes());
        sink(&len_prefix(self.files.len()));
        for (path, text) in &self.files {
            field(sink, path.as_bytes());
            field(sink, text.as_bytes());
        }
    }

    fn decode(mut encoded: &[u8]) -> Result<Self, SourceError> {
        let entry = text(&mut encoded)?;
        let count = len(&mut encoded)?;
        let mut files = BTreeMap::new();
        for _ in 0..count {
            let path = text(&mut encoded)?;
            let body = text(&mut encoded)?;
            files.insert(path, body);
        }
        if !encoded.is_empty() || files.len() != count {
            return Err(SourceError::Damaged);
        }
        Ok(Self { entry, files })
    }
}

fn len_prefix(len: usize) -> [u8; 4] {
    // Bundles are bounded far below 4 GiB where they are made (the host).
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

fn len(input: &mut &[u8]) -> Result<usize, SourceError> {
    let (head, rest) = input.split_first_chunk::<4>().ok_or(SourceError::Damaged)?;
    *input = rest;
    usize::try_from(u32::from_le_bytes(*head)).map_err(|_| SourceError::Damaged)
}

fn text(input: &mut &[u8]) -> Result<String, SourceError> {
    let n = len(input)?;
    let (field, rest) = input.split_at_checked(n).ok_or(SourceError::Damaged)?;
    *input = rest;
    String::from_utf8(field.to_vec()).map_err(|_| SourceError::Damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Source {
        Source::Bundle(Bundle {
            entry: "main.js".into(),
            files: [("main.js", "import './lib.js'"), ("lib.js", "")]
                .into_iter()
                .map(|(p, t)| (p.to_owned(), t.to_owned()))
                .collect(),
        })
    }

    #[test]
    fn round_trips() {
        let source = bundle();
        assert_eq!(Source::decode(source.encode()), Ok(source));
        let file = Source::from("export default () => 1");
        assert_eq!(Source::decode(file.encode()), Ok(file));
    }

    #[test]
    fn damaged_bundles_and_bad_text_are_errors() {
        let encoded = bundle().encode();
        for cut in BUNDLE_MAGIC.len()..encoded.len() {
            assert_eq!(
                Source::decode(encoded[..cut].to_vec()),
                Err(SourceError::Damaged),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(Source::decode(longer), Err(SourceError::Damaged));
        assert_eq!(Source::decode(vec![0xff, 0xfe]), Err(SourceError::NotUtf8));
    }

    #[test]
    fn a_bundle_hashes_as_its_encoding() {
        let (mut a, mut b) = (blake3::Hasher::new(), blake3::Hasher::new());
        bundle().hash_into(&mut a);
        b.update(&bundle().encode());
        assert_eq!(a.finalize(), b.finalize());
    }

    #[test]
    fn a_file_hashes_as_its_text() {
        let (mut a, mut b) = (blake3::Hasher::new(), blake3::Hasher::new());
        Source::from("x").hash_into(&mut a);
        b.update(b"x");
        assert_eq!(a.finalize(), b.finalize());
    }
}
