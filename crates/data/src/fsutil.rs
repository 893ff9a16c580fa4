//! Crash-safe file writing.

use crate::error::{DataError, Result};
use std::io::{Read, Write};
use std::path::Path;

/// Why a path that is not a regular file is skipped: reading a FIFO would block forever, a
/// device might never end.
pub const NOT_REGULAR_FILE: &str = "not a regular file (FIFO, socket or device), skipped";

/// What names [`write_atomic`]'s temporary files: `.<name>.tmp-<pid>`.
const TEMP_MARK: &str = ".tmp-";

/// Whether a file name is one of [`write_atomic`]'s temporary files (left behind only when a
/// process was killed mid-write; the file it was replacing is intact).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(TEMP_MARK)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Environment variable for crash tests: pause this many milliseconds between writing a
/// temporary file and renaming it, so that a kill can be aimed inside a write.
pub const TEST_WRITE_PAUSE: &str = "ARTEMIS_TEST_WRITE_PAUSE_MS";

fn test_pause() {
    if let Some(ms) = std::env::var(TEST_WRITE_PAUSE)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder is written, synced
/// and renamed over `path`, so a reader (or a crash) sees the old file or the new one, never a
/// torn mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        test_pause();
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The largest file accepted for a pixel limit: the raw size of that many 16-bit RGBA pixels
/// (no compressed image is larger) plus 16 MiB of metadata. Bigger files are refused before
/// they are read, so one huge file cannot exhaust memory.
pub fn max_file_bytes(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(8).saturating_add(16 << 20)
}

/// Reads a whole file, refusing files over `max_bytes` (checked before reading, and again
/// while reading in case the file grows) and anything that is not a regular file (a FIFO
/// would block, a device would never end).
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: crate::fsutil::NOT_REGULAR_FILE.into(),
        });
    }
    let too_big = |len: u64| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("file is {len} bytes, over the limit of {max_bytes} for the pixel limit"),
    };
    if meta.len() > max_bytes {
        return Err(too_big(meta.len()));
    }
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Serialising paths that may not be UTF-8 (a file name a scanner wrote in Latin-1): JSON
/// strings must be UTF-8, so such bytes are written as U+FFFD instead of failing the whole
/// report. Use with `#[serde(serialize_with = "...")]`.
pub mod lossy {
    use serde::Serializer;
    use std::path::{Path, PathBuf};

    /// One path.
    pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    /// `(path, reason)` pairs, as `[path, reason]` arrays.
    pub fn path_reasons<S: Serializer>(v: &[(PathBuf, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(p, r)| (p.to_string_lossy(), r)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.txt");
        super::write_atomic(&p, b"first version, long").unwrap();
        super::write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers = std::fs::read_dir(dir.path().join("sub")).unwrap().count();
        assert_eq!(leftovers, 1);
        assert!(super::is_temp_name(".state.json.tmp-4242"));
        assert!(!super::is_temp_name("state.json"));
        assert!(!super::is_temp_name(".state.json.tmp-"));
        assert!(!super::is_temp_name("x.tmp-12"));
    }
}
