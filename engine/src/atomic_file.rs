//! Replacing a file atomically: written to a temporary file beside it, then renamed over it, so
//! a crash or a full disk never leaves a half-written session, picture or settings file behind.

use std::io;
use std::path::Path;

/// Runs `write` on a temporary path beside `path`, then renames the result over `path`. On any
/// failure the temporary file is removed and `path` is untouched; `io_error` turns the
/// function's own I/O failures (no file name, the rename) into the caller's error type.
pub fn write_atomically<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let name = path.file_name().ok_or_else(|| {
        io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(&io_error));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("headwise-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kept.txt");
        std::fs::write(&path, "old").unwrap();
        let failed = write_atomically(
            &path,
            |tmp| {
                std::fs::write(tmp, "half")?;
                Err(io::Error::other("disk full"))
            },
            |e| e,
        );
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        write_atomically(&path, |tmp| std::fs::write(tmp, "new"), |e| e).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
