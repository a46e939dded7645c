//! Scripts of several files: a JSON map of files, or a zip, tar or tar.gz
//! archive, made into one [`Bundle`]. Every bound (files, bytes, path
//! length) is enforced while reading, so an archive that inflates past them
//! stops there instead of being unpacked first.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use kiln_runtime::Bundle;

use crate::api::ApiError;
use crate::store::Language;

/// At most this many files in a bundle.
pub const MAX_FILES: usize = 1_000;
/// At most this many bytes of text in all a bundle's files together.
pub const MAX_BYTES: usize = 5 << 20;
/// A path is at most this many bytes.
const MAX_PATH_BYTES: usize = 255;

/// Whether `bytes` look like an archive this module reads.
pub fn is_archive(bytes: &[u8]) -> bool {
    archive_kind(bytes).is_some()
}

#[derive(Debug, Clone, Copy)]
enum ArchiveKind {
    Zip,
    Gzip,
    Tar,
}

fn archive_kind(bytes: &[u8]) -> Option<ArchiveKind> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some(ArchiveKind::Zip)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveKind::Gzip)
    } else if is_tar_header(bytes) {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
}

/// A tar header: `ustar` at 257 and a checksum that adds up (so a source
/// file that happens to have `ustar` there is still a source file).
fn is_tar_header(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..512) else {
        return false;
    };
    if &header[257..262] != b"ustar" {
        return false;
    }
    let stored = std::str::from_utf8(&header[148..156])
        .ok()
        .map(|field| field.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|field| u32::from_str_radix(field, 8).ok());
    // The checksum counts its own field as eight spaces.
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

/// What a tar stream may inflate to: the files' bound plus headers (and a
/// long name or PAX record each) for as many entries as are looked at.
/// The tar reader holds a long name or PAX record whole in memory, so the
/// stream itself is cut here rather than trusting what its headers claim.
const MAX_TAR_STREAM: u64 = MAX_BYTES as u64 + (MAX_FILES as u64 * 4) * 2048;

/// A bundle from a JSON map of path to text; `entry` defaults to the
/// language's usual name (see [`default_entry`]).
///
/// # Errors
///
/// A validation error naming the file or bound at fault.
pub fn from_map(
    language: Language,
    entry: Option<String>,
    files: BTreeMap<String, String>,
) -> Result<Bundle, ApiError> {
    let mut checked = Files::default();
    for (path, text) in files {
        checked.add(&path, text.into_bytes(), "files")?;
    }
    checked.finish(language, entry, "files")
}

/// A bundle from a zip, tar or gzipped tar archive. Directories, macOS
/// resource forks and Python bytecode caches are left out; a single
/// top-level directory that holds everything is stripped.
///
/// # Errors
///
/// An unreadable archive, a link or device entry, a file that is not
/// UTF-8, or a bound passed.
pub fn from_archive(
    language: Language,
    entry: Option<String>,
    bytes: &[u8],
) -> Result<Bundle, ApiError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ApiError::invalid("content", format!("the archive cannot be read: {e}"))
    };
    let mut files = Files::default();
    match archive_kind(bytes) {
        Some(ArchiveKind::Zip) => {
            let mut archive =
                zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| unreadable(&e))?;
            if archive.len() > MAX_FILES * 4 {
                return Err(too_many("content"));
            }
            for i in 0..archive.len() {
                let entry = archive.by_index(i).map_err(|e| unreadable(&e))?;
                if entry.is_dir() {
                    continue;
                }
                if entry.is_symlink() {
                    return Err(link(entry.name()));
                }
                let path = entry.name().to_owned();
                if skipped(&path) {
                    continue;
                }
                let text = read_bounded(entry, files.room()).map_err(|e| unreadable(&e))?;
                files.add(&path, text, "content")?;
            }
        }
        Some(ArchiveKind::Gzip) => {
            let inflated = flate2::read::GzDecoder::new(bytes).take(MAX_TAR_STREAM);
            read_tar(tar::Archive::new(inflated), &mut files)?;
        }
        Some(ArchiveKind::Tar) => {
            read_tar(tar::Archive::new(bytes.take(MAX_TAR_STREAM)), &mut files)?;
        }
        None => {
            return Err(ApiError::invalid(
                "content",
                "not a zip, tar or gzipped tar archive",
            ));
        }
    }
    let stripped = files.strip_common_directory();
    // An entry named as it was in the archive still names its file.
    let entry = entry.map(|entry| match &stripped {
        Some(prefix) => entry
            .strip_prefix(prefix.as_str())
            .map_or(entry.clone(), str::to_owned),
        None => entry,
    });
    files.finish(language, entry, "content")
}

fn read_tar<R: Read>(mut archive: tar::Archive<R>, files: &mut Files) -> Result<(), ApiError> {
    let unreadable = |e: std::io::Error| {
        ApiError::invalid("content", format!("the archive cannot be read: {e}"))
    };
    let mut seen = 0usize;
    for entry in archive.entries().map_err(unreadable)? {
        seen += 1;
        if seen > MAX_FILES * 4 {
            return Err(too_many("content"));
        }
        let entry = entry.map_err(unreadable)?;
        let kind = entry.header().entry_type();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(link(&path));
        }
        if !kind.is_file() {
            return Err(ApiError::invalid(
                "content",
                format!("{path}: only regular files can be in a bundle"),
            ));
        }
        if skipped(&path) {
            continue;
        }
        let text = read_bounded(entry, files.room()).map_err(unreadable)?;
        files.add(&path, text, "content")?;
    }
    Ok(())
}

/// Reads at most `room + 1` bytes: one past the room is enough to know the
/// bound is passed, whatever the archive claims the size is.
fn read_bounded(reader: impl Read, room: usize) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    reader.take(room as u64 + 1).read_to_end(&mut text)?;
    Ok(text)
}

/// What archivers add that is not part of a script.
fn skipped(path: &str) -> bool {
    path.split('/').any(|part| {
        part == "__MACOSX" || part == "__pycache__" || part == ".DS_Store" || part.starts_with("._")
    }) || path.ends_with(".pyc")
}

fn link(path: &str) -> ApiError {
    ApiError::invalid(
        "content",
        format!("{path}: links cannot be in a bundle; archive the file itself"),
    )
}

fn too_many(field: &str) -> ApiError {
    ApiError::invalid(field, format!("a bundle has at most {MAX_FILES} files"))
}

/// Files as they are read, with the bounds checked on each.
#[derive(Default)]
struct Files {
    files: BTreeMap<String, String>,
    bytes: usize,
}

impl Files {
    /// Bytes of text still allowed.
    fn room(&self) -> usize {
        MAX_BYTES.saturating_sub(self.bytes)
    }

    fn add(&mut self, path: &str, text: Vec<u8>, field: &str) -> Result<(), ApiError> {
        let path = clean_path(path).map_err(|why| ApiError::invalid(field, why))?;
        if self.files.len() >= MAX_FILES {
            return Err(too_many(field));
        }
        self.bytes += path.len() + text.len();
        if self.bytes > MAX_BYTES {
            return Err(ApiError::invalid(
                field,
                format!("a bundle holds at most {MAX_BYTES} bytes of files"),
            ));
        }
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::invalid(field, format!("{path}: not UTF-8 text")))?;
        if text.contains('\0') {
            return Err(ApiError::invalid(
                field,
                format!("{path}: contains a NUL character"),
            ));
        }
        if self.files.insert(path.clone(), text).is_some() {
            return Err(ApiError::invalid(field, format!("{path}: given twice")));
        }
        Ok(())
    }

    /// `app/main.js`, `app/lib.js` → `main.js`, `lib.js`: what zipping a
    /// folder makes; the prefix taken off, if any. A folder that is a
    /// Python package (its own `__init__.py`) stays: its name is how its
    /// modules are imported.
    fn strip_common_directory(&mut self) -> Option<String> {
        let first = self.files.keys().next()?;
        let (dir, _) = first.split_once('/')?;
        let prefix = format!("{dir}/");
        let all_inside = self.files.keys().all(|path| path.starts_with(&prefix));
        if !all_inside || self.files.contains_key(&format!("{prefix}__init__.py")) {
            return None;
        }
        self.files = std::mem::take(&mut self.files)
            .into_iter()
            .map(|(path, text)| (path[prefix.len()..].to_owned(), text))
            .collect();
        Some(prefix)
    }

    fn finish(
        self,
        language: Language,
        entry: Option<String>,
        field: &str,
    ) -> Result<Bundle, ApiError> {
        if self.files.is_empty() {
            return Err(ApiError::invalid(field, "the bundle has no files"));
        }
        let entry = match entry {
            Some(entry) => clean_path(&entry).map_err(|why| ApiError::invalid("entry", why))?,
            None => default_entry(language, &self.files).ok_or_else(|| {
                ApiError::invalid(
                    "entry",
                    format!(
                        "name the file that runs: the bundle has none of {}",
                        default_entries(language).join(", ")
                    ),
                )
            })?,
        };
        if !self.files.contains_key(&entry) {
            return Err(ApiError::invalid(
                "entry",
                format!("{entry:?} is not one of the bundle's files"),
            ));
        }
        let extension_fits = match language {
            Language::Javascript => entry.ends_with(".js") || entry.ends_with(".mjs"),
            Language::Python => entry.ends_with(".py"),
            Language::Wasm => false,
        };
        if !extension_fits {
            return Err(ApiError::invalid(
                "entry",
                format!("{entry:?} is not a {} file", language_name(language)),
            ));
        }
        Ok(Bundle {
            entry,
            files: self.files,
        })
    }
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::Javascript => "JavaScript",
        Language::Python => "Python",
        Language::Wasm => "source",
    }
}

/// The names an entry has when none is given, most usual first.
pub fn default_entries(language: Language) -> &'static [&'static str] {
    match language {
        Language::Javascript => &["main.js", "index.js", "main.mjs", "index.mjs"],
        Language::Python => &["main.py", "__main__.py"],
        Language::Wasm => &[],
    }
}

/// The language's usual entry, else the only file at the root.
fn default_entry(language: Language, files: &BTreeMap<String, String>) -> Option<String> {
    if let Some(found) = default_entries(language)
        .iter()
        .find(|name| files.contains_key(**name))
    {
        return Some((*found).to_owned());
    }
    let mut at_root = files.keys().filter(|path| !path.contains('/'));
    match (at_root.next(), at_root.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// A relative, `/`-separated path inside the bundle, with `./` and empty
/// parts dropped; nothing that climbs out, is absolute, or has a backslash,
/// a control character or a drive letter.
fn clean_path(path: &str) -> Result<String, String> {
    let shown: String = path.chars().take(80).collect();
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "{shown}…: a path is at most {MAX_PATH_BYTES} bytes"
        ));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return Err(format!("{shown:?}: paths are relative and /-separated"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{shown:?}: a path has no control characters"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!("{shown:?}: a path cannot climb out with .."));
    }
    if parts.is_empty() {
        return Err(format!("{shown:?}: not a file's path"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect()
    }

    fn message(e: ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean_path("./lib//util.js").as_deref(), Ok("lib/util.js"));
        for bad in [
            "../x.js",
            "a/../../x.js",
            "/etc/passwd",
            "a\\b.js",
            "C:x.js",
            "a\nb",
            ".",
            "",
        ] {
            assert!(clean_path(bad).is_err(), "{bad:?}");
        }
        assert!(clean_path(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
    }

    #[test]
    fn entry_defaults_by_language_or_to_the_only_root_file() {
        let js = from_map(
            Language::Javascript,
            None,
            map(&[("index.js", ""), ("lib/a.js", "")]),
        );
        assert_eq!(js.map(|b| b.entry).ok().as_deref(), Some("index.js"));
        let py = from_map(
            Language::Python,
            None,
            map(&[("app.py", ""), ("pkg/__init__.py", "")]),
        );
        assert_eq!(py.map(|b| b.entry).ok().as_deref(), Some("app.py"));
        let none = from_map(Language::Python, None, map(&[("a.py", ""), ("b.py", "")]));
        assert!(message(none.unwrap_err()).contains("name the file that runs"));
        let wrong = from_map(Language::Python, Some("a.js".into()), map(&[("a.js", "")]));
        assert!(message(wrong.unwrap_err()).contains("not a Python file"));
        let missing = from_map(Language::Python, Some("b.py".into()), map(&[("a.py", "")]));
        assert!(message(missing.unwrap_err()).contains("not one of the bundle's files"));
    }

    #[test]
    fn an_archive_of_too_many_entries_is_refused_before_they_are_read() {
        // Left out as junk, but counted: the listing itself is bounded.
        let names: Vec<String> = (0..=MAX_FILES * 4)
            .map(|i| format!("__MACOSX/._{i}"))
            .collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        for archive in [zip_of(&entries), tar_gz_of(&entries)] {
            let error = from_archive(Language::Javascript, None, &archive).unwrap_err();
            assert!(message(error).contains("at most 1000 files"));
        }
    }

    #[test]
    fn bounds_hold() {
        let many: BTreeMap<String, String> = (0..=MAX_FILES)
            .map(|i| (format!("f{i}.js"), String::new()))
            .collect();
        assert!(
            message(from_map(Language::Javascript, None, many).unwrap_err()).contains("at most")
        );
        let big = map(&[("main.js", &"x".repeat(MAX_BYTES))]);
        assert!(message(from_map(Language::Javascript, None, big).unwrap_err()).contains("bytes"));
        let nul = map(&[("main.js", "a\0b")]);
        assert!(message(from_map(Language::Javascript, None, nul).unwrap_err()).contains("NUL"));
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (path, bytes) in files {
            writer
                .start_file(*path, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut writer, bytes).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner()
    }

    fn tar_gz_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn archives_unpack_with_their_folder_stripped_and_junk_left_out() {
        let files: &[(&str, &[u8])] = &[
            ("app/main.js", b"import './lib/a.js'"),
            ("app/lib/a.js", b""),
            ("app/__MACOSX/._main.js", b"\xff"),
        ];
        for archive in [zip_of(files), tar_gz_of(files)] {
            assert!(is_archive(&archive));
            let bundle = from_archive(Language::Javascript, None, &archive).unwrap();
            assert_eq!(bundle.entry, "main.js");
            assert_eq!(
                bundle.files.keys().collect::<Vec<_>>(),
                ["lib/a.js", "main.js"]
            );
        }
    }

    #[test]
    fn a_named_entry_survives_the_unwrapping_and_a_package_folder_stays() {
        let zipped = zip_of(&[("app/main.js", b""), ("app/lib.js", b"")]);
        let bundle = from_archive(Language::Javascript, Some("app/main.js".into()), &zipped);
        assert_eq!(bundle.unwrap().entry, "main.js");
        let package = zip_of(&[
            ("mypkg/__init__.py", b""),
            ("mypkg/__main__.py", b""),
            ("mypkg/util.py", b""),
        ]);
        let bundle =
            from_archive(Language::Python, Some("mypkg/__main__.py".into()), &package).unwrap();
        assert!(bundle.files.contains_key("mypkg/util.py"));
    }

    #[test]
    fn source_with_ustar_at_257_is_not_a_tar() {
        let mut source = "x".repeat(257);
        source.push_str("ustar and more text after it, long enough to fill a whole header block ");
        source.push_str(&"y".repeat(300));
        assert!(!is_archive(source.as_bytes()));
        let real = tar_gz_of(&[("main.js", b"")]);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&real[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert!(is_archive(&plain), "an uncompressed tar still is one");
    }

    #[test]
    fn a_huge_long_name_record_is_cut_off() {
        // A GNU long-name record of 64 MiB ("main.js" then zeros) before an
        // ordinary file: read whole, it would name that file and the
        // archive would unpack; the stream stops at its bound first.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut write = |bytes: &[u8]| std::io::Write::write_all(&mut encoder, bytes).unwrap();
        let record = 64usize << 20;
        let mut header = tar::Header::new_gnu();
        header.set_path("././@LongLink").unwrap();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(record as u64);
        header.set_cksum();
        write(header.as_bytes());
        write(b"main.js");
        let zeros = vec![0u8; 1 << 20];
        let mut left = record - "main.js".len();
        while left > 0 {
            let n = left.min(zeros.len());
            write(&zeros[..n]);
            left -= n;
        }
        let body = b"export default () => 1;";
        let mut file = tar::Header::new_gnu();
        file.set_path("placeholder.js").unwrap();
        file.set_size(body.len() as u64);
        file.set_mode(0o644);
        file.set_cksum();
        write(file.as_bytes());
        write(body);
        write(&[0u8; 512 - 23]);
        write(&[0u8; 1024]);
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "small on the wire");
        let error = from_archive(Language::Javascript, None, &bomb).unwrap_err();
        assert!(message(error).contains("cannot be read"));
    }

    #[test]
    fn an_archive_that_inflates_past_the_bound_stops_there() {
        let bomb = vec![b'a'; MAX_BYTES + 10];
        for archive in [
            zip_of(&[("main.js", &bomb)]),
            tar_gz_of(&[("main.js", &bomb)]),
        ] {
            assert!(archive.len() < 64 << 10, "compresses well");
            let error = from_archive(Language::Javascript, None, &archive).unwrap_err();
            assert!(message(error).contains("at most"));
        }
        let not_text = zip_of(&[("main.js", b"\xff\xfe")]);
        let error = from_archive(Language::Javascript, None, &not_text).unwrap_err();
        assert!(message(error).contains("not UTF-8"));
        assert!(from_archive(Language::Javascript, None, b"PK\x03\x04junk").is_err());
    }
}
