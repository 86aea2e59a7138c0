//! Watches the open session file, so that a notebook rewriting it (`headwise.show` in a loop)
//! drives the window: the file's modification time and length are looked at twice a second,
//! and a change counts once they have held still for a moment, so that a file still being
//! written is not read half-way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the file is looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a change must hold before it counts.
const SETTLE: Duration = Duration::from_millis(300);

/// What identifies a version of the file: its modification time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

pub struct FileWatch {
    path: PathBuf,
    /// The version on screen (opened, reloaded or saved by the window).
    seen: Option<Stamp>,
    /// A newer version and when it was first noticed.
    candidate: Option<(Stamp, Instant)>,
    checked: Instant,
}

impl FileWatch {
    /// Watches `path`, whose current version is the one on screen.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            seen: stamp(path),
            candidate: None,
            checked: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has changed since it was last seen and has held still since; the new
    /// version then counts as seen (a reload that fails is not retried until the file changes
    /// again). Looks at the file at most every [`CHECK_EVERY`].
    pub fn changed(&mut self, now: Instant) -> bool {
        if now.duration_since(self.checked) < CHECK_EVERY {
            return false;
        }
        self.checked = now;
        let Some(current) = stamp(&self.path) else {
            // Gone (or being replaced): the last good result stays.
            return false;
        };
        if Some(current) == self.seen {
            self.candidate = None;
            return false;
        }
        match self.candidate {
            Some((noticed, since)) if noticed == current && now.duration_since(since) >= SETTLE => {
                self.seen = Some(current);
                self.candidate = None;
                true
            }
            Some((noticed, _)) if noticed == current => false,
            _ => {
                self.candidate = Some((current, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_counts_once_it_holds_still_and_only_once() {
        let dir = std::env::temp_dir().join(format!("headwise-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("session.safetensors");
        std::fs::write(&path, b"one").unwrap();
        let mut watch = FileWatch::new(&path);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert!(!watch.changed(at(600)), "unchanged");
        std::fs::write(&path, b"two, longer").unwrap();
        assert!(!watch.changed(at(700)), "looked at too soon");
        assert!(!watch.changed(at(1200)), "noticed, not yet still");
        assert!(watch.changed(at(1800)), "held still");
        assert!(!watch.changed(at(2400)), "counted once");
        // The window's own save is not a change: it watches the version it wrote.
        std::fs::write(&path, b"three, saved here").unwrap();
        let mut watch = FileWatch::new(&path);
        assert!(!watch.changed(at(3000)));
        assert!(!watch.changed(at(3600)));
        // A file that disappears keeps what is on screen.
        std::fs::remove_file(&path).unwrap();
        assert!(!watch.changed(at(4200)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
