#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop. The writer
/// makes logs append-only when the tests run as root, so the flag is cleared
/// first (root holds `CAP_LINUX_IMMUTABLE`) or the files could not be removed.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "flow-audit-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        clear_append_only(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn clear_append_only(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            clear_append_only(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            if let Ok(flags) = rustix::fs::ioctl_getflags(&f) {
                let _ = rustix::fs::ioctl_setflags(&f, flags - rustix::fs::IFlags::APPEND);
            }
        }
    }
}

/// The byte ranges of the lines of `bytes`, each with its newline.
pub fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && i + 1 < bytes.len() {
            starts.push(i + 1);
        }
    }
    starts
}
