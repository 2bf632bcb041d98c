//! Fixtures shared by the store's and the Model Hub's tests: a scratch
//! directory, fake GGUF files, and catalog entries and catalogs for them.

use super::catalog::{Catalog, CatalogEntry, Source};
use super::store::Store;
use audit::{Digest, ModelId, Version};
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "flow-models-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The store in `models/` below this directory.
    pub(crate) fn store(&self) -> Store {
        Store::open(&self.join("models")).unwrap()
    }

    /// A file of that store's partial downloads.
    pub(crate) fn partial(&self, stem: &str) -> PathBuf {
        self.join("models/.partial").join(stem)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small fake GGUF file: a v3 header, then bytes derived from `seed`.
pub(crate) fn fake_gguf(seed: u8, len: usize) -> Vec<u8> {
    let mut b = b"GGUF\x03\0\0\0".to_vec();
    b.extend((0..len - 8).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    b
}

pub(crate) fn sha(bytes: &[u8]) -> Digest {
    Digest(Sha256::digest(bytes).into())
}

/// The catalog entry of `bytes` as model `id@version`, one file `m.gguf`.
pub(crate) fn entry(id: &str, version: &str, bytes: &[u8]) -> CatalogEntry {
    CatalogEntry {
        id: ModelId::parse(id).unwrap(),
        version: Version::parse(version).unwrap(),
        sha256: sha(bytes),
        size: bytes.len() as u64,
        context_length: 2048,
        memory_floor_mb: 64,
        chat_template: "chatml".into(),
        description: "a fake model for tests".into(),
        sources: vec![Source::File {
            name: "m.gguf".into(),
        }],
    }
}

/// A catalog file of `entries`, as TOML.
pub(crate) fn catalog_toml(entries: &[CatalogEntry]) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        models: &'a [CatalogEntry],
    }
    toml::to_string(&File { models: entries }).unwrap()
}

/// A catalog of `entries`, written as TOML and parsed like a real one.
pub(crate) fn catalog(entries: &[CatalogEntry]) -> Catalog {
    Catalog::parse(&catalog_toml(entries), "test-catalog.toml").unwrap()
}

/// The permission bits of `path` (not following a link).
pub(crate) fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}
