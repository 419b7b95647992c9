//! Replacing a file whole or not at all: the new contents are written to a file beside it,
//! flushed to the disk, renamed over it, and the folder is flushed so the rename survives a
//! machine crash. A crash at any point leaves either the old file or the new one, never a mix.
//! The log journal's rewrite and the cluster's snapshot file both go through here.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// How much is buffered between writes to the new file (a rewritten journal can be large).
const BUFFER: usize = 1 << 20;

/// Writes `path` anew through `write` (given a buffered writer on `tmp`, a file beside `path`),
/// then flushes and renames `tmp` over `path`. `io` turns a failed file operation on a path into
/// the caller's error.
pub fn replace_file<E>(
    path: &Path,
    tmp: &Path,
    io: impl Fn(&Path, std::io::Error) -> E,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let mut f = BufWriter::with_capacity(BUFFER, File::create(tmp).map_err(|e| io(tmp, e))?);
    write(&mut f)?;
    f.flush().map_err(|e| io(tmp, e))?;
    let f = f.into_inner().map_err(|e| io(tmp, e.into_error()))?;
    f.sync_all().map_err(|e| io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn io(path: &Path, e: std::io::Error) -> String {
        format!("{}: {e}", path.display())
    }

    /// A fresh folder for one test holding `f` ("old"): the folder, `f` and `f.new`.
    fn scratch(test: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("ags_{test}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, tmp) = (dir.join("f"), dir.join("f.new"));
        std::fs::write(&path, b"old").unwrap();
        (dir, path, tmp)
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let (dir, path, tmp) = scratch("replace");
        replace_file(&path, &tmp, io, |f| {
            f.write_all(b"new").map_err(|e| io(&tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let (dir, path, tmp) = scratch("replace_fail");
        let err = replace_file(&path, &tmp, io, |f| {
            f.write_all(b"half").map_err(|e| io(&tmp, e))?;
            Err("encoding failed".to_string())
        })
        .unwrap_err();
        assert_eq!(err, "encoding failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
