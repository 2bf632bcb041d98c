use super::*;
use crate::models::test_support::{catalog, entry, fake_gguf, mode, sha, TempDir};
use std::os::unix::fs::MetadataExt;

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Names in the store root other than model id directories.
fn leftovers(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn id(s: &str) -> ModelId {
    ModelId::parse(s).unwrap()
}

fn ver(s: &str) -> Version {
    Version::parse(s).unwrap()
}

#[test]
fn import_lays_out_a_private_read_only_model() {
    let dir = TempDir::new("import");
    let store = dir.store();
    let bytes = fake_gguf(1, 300_000);
    let e = entry("tiny", "1.0.0", &bytes);
    let cat = catalog(&[e.clone(), entry("other", "1.0.0", &fake_gguf(2, 100))]);
    let src = write(&dir, "tiny.gguf", &bytes);

    let model = store.import_file(&src, &cat).unwrap();
    let path = store.dir().join("tiny/1.0.0/model.gguf");
    assert_eq!(
        model,
        StoredModel {
            id: id("tiny"),
            version: ver("1.0.0"),
            size: bytes.len() as u64,
            digest: sha(&bytes),
            path: path.clone(),
            entry: e.clone(),
        }
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // A root broker's store is traversable by the sandbox uid (llama-server).
    let dir_mode = if rustix::process::geteuid().is_root() {
        0o711
    } else {
        0o700
    };
    assert_eq!(mode(store.dir()), dir_mode);
    assert_eq!(mode(&store.dir().join("tiny")), 0o700);
    assert_eq!(mode(&store.dir().join("tiny/1.0.0")), 0o700);
    assert_eq!(mode(&path), 0o444);
    let entry_path = store.dir().join("tiny/1.0.0/entry.toml");
    assert_eq!(mode(&entry_path), 0o444);
    let stored_entry =
        CatalogEntry::parse(&std::fs::read_to_string(&entry_path).unwrap(), "entry.toml").unwrap();
    assert_eq!(stored_entry, e);
    assert_eq!(store.list().unwrap(), vec![model.clone()]);
    assert_eq!(store.get("tiny", Some("1.0.0")), Some(model.clone()));
    assert_eq!(store.get("tiny", None), Some(model));
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn importing_twice_is_idempotent() {
    let dir = TempDir::new("twice");
    let store = dir.store();
    let bytes = fake_gguf(3, 5000);
    let cat = catalog(&[entry("tiny", "1.0.0", &bytes)]);
    let src = write(&dir, "tiny.gguf", &bytes);
    let first = store.import_file(&src, &cat).unwrap();
    let second = store.import_file(&src, &cat).unwrap();
    assert_eq!(first, second);
    let third = store.import_reader(&bytes[..], &cat.entries()[0]).unwrap();
    assert_eq!(first, third);
    assert_eq!(store.list().unwrap(), vec![first]);
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn a_file_in_no_catalog_entry_is_refused() {
    let dir = TempDir::new("not-in-catalog");
    let store = dir.store();
    let known = fake_gguf(4, 5000);
    let unknown = fake_gguf(5, 5000);
    let cat = catalog(&[entry("tiny", "1.0.0", &known)]);
    let src = write(&dir, "unknown.gguf", &unknown);
    let err = store.import_file(&src, &cat).unwrap_err();
    match &err {
        StoreError::NotInCatalog { path, digest, size } => {
            assert_eq!(
                (path, digest.as_str(), *size),
                (&src, sha(&unknown).to_hex().as_str(), 5000)
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("add a [[models]] entry"), "{err}");
    assert_eq!(store.list().unwrap(), vec![]);
    assert_eq!(leftovers(&store), Vec::<String>::new());
    // A truncated file is just another file the catalog does not know.
    let truncated = write(&dir, "truncated.gguf", &known[..4000]);
    assert!(matches!(
        store.import_file(&truncated, &cat),
        Err(StoreError::NotInCatalog { size: 4000, .. })
    ));
    // Larger than any entry: refused before it is read.
    let large = write(&dir, "large.gguf", &fake_gguf(4, 5001));
    assert!(matches!(
        store.import_file(&large, &cat),
        Err(StoreError::TooLarge {
            size: 5001,
            max: 5000,
            ..
        })
    ));
    assert!(matches!(
        store.import_file(&src, &Catalog::default()),
        Err(StoreError::EmptyCatalog)
    ));
}

#[test]
fn a_download_must_match_its_entry() {
    let dir = TempDir::new("reader");
    let store = dir.store();
    let bytes = fake_gguf(6, 70_000);
    let e = entry("tiny", "1.0.0", &bytes);

    let mut flipped = bytes.clone();
    flipped[60_000] ^= 1;
    match store.import_reader(&flipped[..], &e).unwrap_err() {
        StoreError::DigestMismatch {
            expected, actual, ..
        } => assert_eq!(
            (expected, actual),
            (sha(&bytes).to_hex(), sha(&flipped).to_hex())
        ),
        other => panic!("{other}"),
    }
    match store.import_reader(&bytes[..69_999], &e).unwrap_err() {
        StoreError::SizeMismatch {
            expected, actual, ..
        } => assert_eq!((expected, actual), (70_000, 69_999)),
        other => panic!("{other}"),
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"more");
    assert!(matches!(
        store.import_reader(&longer[..], &e),
        Err(StoreError::Oversize {
            expected: 70_000,
            ..
        })
    ));
    // An endless stream is cut off after size + 1 bytes.
    let endless = std::io::repeat(7).take(u64::MAX);
    let mut endless_gguf = (&b"GGUF\x03\0\0\0"[..]).chain(endless);
    assert!(matches!(
        store.import_reader(&mut endless_gguf, &e),
        Err(StoreError::Oversize { .. })
    ));
    assert_eq!(store.list().unwrap(), vec![]);
    assert_eq!(leftovers(&store), Vec::<String>::new());
    assert_eq!(
        store.import_reader(&bytes[..], &e).unwrap().digest,
        sha(&bytes)
    );
}

#[test]
fn a_non_gguf_file_gets_a_clear_error() {
    let dir = TempDir::new("not-gguf");
    let store = dir.store();
    let zip = b"PK\x03\x04 this is a wheel, not a model".to_vec();
    let old = b"GGUF\x01\0\0\0 version one".to_vec();
    let cat = catalog(&[entry("zip", "1.0.0", &zip), entry("old", "1.0.0", &old)]);
    let err = store
        .import_file(&write(&dir, "m.whl", &zip), &cat)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotGguf {
                source: GgufError::NotGguf,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not a gguf model"), "{err}");
    assert!(matches!(
        store.import_file(&write(&dir, "old.gguf", &old), &cat),
        Err(StoreError::NotGguf {
            source: GgufError::Version(1),
            ..
        })
    ));
    let short = entry("short", "1.0.0", b"GGU");
    assert!(matches!(
        store.import_reader(&b"GGU"[..], &short),
        Err(StoreError::NotGguf {
            source: GgufError::TooShort,
            ..
        })
    ));
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn only_regular_files_are_imported() {
    let dir = TempDir::new("special");
    let store = dir.store();
    let cat = catalog(&[entry("tiny", "1.0.0", &fake_gguf(8, 100))]);
    let sub = dir.join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    let zero = dir.join("zero.gguf");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.join("fifo.gguf");
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c_fifo` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    for (path, want) in [
        (&sub, "directory"),
        (&zero, "character device"),
        (&fifo, "fifo"),
    ] {
        match store.import_file(path, &cat).unwrap_err() {
            StoreError::NotRegularFile { path: p, kind } => assert_eq!((&p, kind), (path, want)),
            other => panic!("{}: {other}", path.display()),
        }
    }
    assert!(matches!(
        store.import_file(&dir.join("missing.gguf"), &cat),
        Err(StoreError::Open { .. })
    ));
}

#[test]
fn verify_detects_a_flipped_byte() {
    let dir = TempDir::new("verify");
    let store = dir.store();
    let bytes = fake_gguf(9, 10_000);
    let cat = catalog(&[entry("tiny", "1.0.0", &bytes)]);
    let model = store
        .import_file(&write(&dir, "t.gguf", &bytes), &cat)
        .unwrap();
    let outcome = store.verify(&id("tiny"), &ver("1.0.0")).unwrap();
    assert_eq!(outcome, VerifyOutcome::Intact(model.clone()));
    assert!(outcome.ok());

    // Someone with the owner's rights changes the file in place.
    std::fs::set_permissions(&model.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut flipped = bytes.clone();
    flipped[9_999] ^= 0x80;
    std::fs::write(&model.path, &flipped).unwrap();

    let outcome = store.verify(&id("tiny"), &ver("1.0.0")).unwrap();
    assert_eq!(
        outcome,
        VerifyOutcome::Corrupt {
            model: model.clone(),
            actual_digest: sha(&flipped),
            actual_size: 10_000,
        }
    );
    assert!(!outcome.ok());
    let err = store.open_verified(&id("tiny"), &ver("1.0.0")).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("flow models remove tiny 1.0.0"),
        "{err}"
    );

    // Truncated in place: also caught, and by size.
    std::fs::write(&model.path, &bytes[..5]).unwrap();
    let outcome = store.verify(&id("tiny"), &ver("1.0.0")).unwrap();
    assert!(matches!(
        outcome,
        VerifyOutcome::Corrupt { actual_size: 5, .. }
    ));

    // Importing again repairs it.
    store
        .import_file(&write(&dir, "t.gguf", &bytes), &cat)
        .unwrap();
    assert!(store.verify(&id("tiny"), &ver("1.0.0")).unwrap().ok());
    assert!(matches!(
        store.verify(&id("tiny"), &ver("2.0.0")),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn remove_takes_the_version_and_then_the_model() {
    let dir = TempDir::new("remove");
    let store = dir.store();
    let a = fake_gguf(10, 1000);
    let b = fake_gguf(11, 1000);
    let cat = catalog(&[entry("tiny", "1.0.0", &a), entry("tiny", "1.1.0", &b)]);
    let ma = store.import_file(&write(&dir, "a", &a), &cat).unwrap();
    let mb = store.import_file(&write(&dir, "b", &b), &cat).unwrap();
    assert_eq!(store.list().unwrap(), vec![ma.clone(), mb.clone()]);

    assert_eq!(store.remove(&id("tiny"), &ver("1.0.0")).unwrap(), ma);
    assert_eq!(store.list().unwrap(), vec![mb.clone()]);
    assert!(!store.dir().join("tiny/1.0.0").exists());
    assert!(matches!(
        store.remove(&id("tiny"), &ver("1.0.0")),
        Err(StoreError::NotFound { .. })
    ));

    assert_eq!(store.remove(&id("tiny"), &ver("1.1.0")).unwrap(), mb);
    assert_eq!(store.list().unwrap(), vec![]);
    assert!(!store.dir().join("tiny").exists());
    assert_eq!(store.get("tiny", None), None);
}

#[test]
fn get_picks_the_newest_release() {
    let dir = TempDir::new("latest");
    let store = dir.store();
    let versions = ["1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1"];
    let files: Vec<Vec<u8>> = (0..versions.len())
        .map(|i| fake_gguf(20 + i as u8, 500))
        .collect();
    let entries: Vec<CatalogEntry> = versions
        .iter()
        .zip(&files)
        .map(|(v, f)| entry("tiny", v, f))
        .collect();
    let cat = catalog(&entries);
    for (i, f) in files.iter().enumerate() {
        store
            .import_file(&write(&dir, &format!("f{i}"), f), &cat)
            .unwrap();
    }
    let listed: Vec<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    assert_eq!(listed, ["1.0.0", "1.9.0", "1.10.0", "2.0.0-rc.1"]);
    assert_eq!(store.get("tiny", None).unwrap().version.as_str(), "1.10.0");
    assert_eq!(
        store.get("tiny", Some("2.0.0-rc.1")).unwrap().entry,
        entries[3]
    );
    assert_eq!(store.get("tiny", Some("1.9.0")).unwrap().entry, entries[2]);
    assert_eq!(store.get("tiny", Some("3.0.0")), None);
    assert_eq!(store.get("Tiny", None), None);
    assert_eq!(store.get("../tiny", None), None);
    assert_eq!(store.get("tiny", Some("1.9")), None);
    // With only pre-releases, the newest of them.
    for v in ["1.0.0", "1.10.0", "1.9.0"] {
        store.remove(&id("tiny"), &ver(v)).unwrap();
    }
    assert_eq!(
        store.get("tiny", None).unwrap().version.as_str(),
        "2.0.0-rc.1"
    );
}

#[test]
fn open_verified_returns_the_descriptor_it_hashed() {
    let dir = TempDir::new("open-verified");
    let store = dir.store();
    let bytes = fake_gguf(30, 400_000);
    let cat = catalog(&[entry("tiny", "1.0.0", &bytes)]);
    let stored = store
        .import_file(&write(&dir, "t.gguf", &bytes), &cat)
        .unwrap();
    let ino = std::fs::metadata(&stored.path).unwrap().ino();

    let (mut file, model) = store.open_verified(&id("tiny"), &ver("1.0.0")).unwrap();
    assert_eq!(model, stored);
    assert_eq!(file.metadata().unwrap().ino(), ino);

    // Swap another file in at the path after the check: the descriptor still
    // reads the bytes that were hashed, from the start.
    let evil = write(&dir, "evil", &fake_gguf(31, 400_000));
    std::fs::rename(&evil, &stored.path).unwrap();
    let mut read = Vec::new();
    file.read_to_end(&mut read).unwrap();
    assert_eq!(sha(&read), stored.digest);
    assert_eq!(read, bytes);

    // The swapped file itself is refused by the next open.
    assert!(matches!(
        store.open_verified(&id("tiny"), &ver("1.0.0")),
        Err(StoreError::Corrupt { .. })
    ));
    // A symlink in place of the model is not followed.
    std::fs::remove_file(&stored.path).unwrap();
    std::os::unix::fs::symlink(dir.join("t.gguf"), &stored.path).unwrap();
    assert!(matches!(
        store.open_verified(&id("tiny"), &ver("1.0.0")),
        Err(StoreError::Damaged { .. })
    ));
}

#[test]
fn damaged_entries_are_skipped_and_stale_temps_removed() {
    let dir = TempDir::new("damaged");
    let store = dir.store();
    let bytes = fake_gguf(40, 100);
    let cat = catalog(&[entry("tiny", "1.0.0", &bytes)]);
    let model = store
        .import_file(&write(&dir, "t.gguf", &bytes), &cat)
        .unwrap();
    // A version directory whose entry.toml is for another model.
    let other = store.dir().join("tiny/2.0.0");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(
        store.dir().join("tiny/1.0.0/entry.toml"),
        other.join("entry.toml"),
    )
    .unwrap();
    std::fs::write(other.join("model.gguf"), &bytes).unwrap();
    // A half-done import (no model.gguf) and names that are not ids.
    std::fs::create_dir_all(store.dir().join("tiny/3.0.0")).unwrap();
    std::fs::create_dir_all(store.dir().join("Not An Id/1.0.0")).unwrap();
    assert_eq!(store.list().unwrap(), vec![model.clone()]);
    assert_eq!(store.get("tiny", None), Some(model));
    assert!(matches!(
        store.open_verified(&id("tiny"), &ver("2.0.0")),
        Err(StoreError::Damaged { .. })
    ));

    // A temp file of a dead process goes at the next open; ours stays.
    let dead = store.dir().join(format!("{TEMP_PREFIX}{}-0", u32::MAX));
    let ours = store
        .dir()
        .join(format!("{TEMP_PREFIX}{}-999999", std::process::id()));
    std::fs::write(&dead, b"x").unwrap();
    std::fs::write(&ours, b"x").unwrap();
    Store::open(store.dir()).unwrap();
    assert!(!dead.exists());
    assert!(ours.exists());
    std::fs::remove_file(&ours).unwrap();
}

#[test]
fn a_store_directory_with_a_wide_mode_is_refused() {
    let dir = TempDir::new("mode");
    let models = dir.join("models");
    std::fs::create_dir(&models).unwrap();
    std::fs::set_permissions(&models, std::fs::Permissions::from_mode(0o755)).unwrap();
    if rustix::process::geteuid().is_root() {
        // Root: the store is made traversable-only, never left listable.
        Store::open(&models).unwrap();
        assert_eq!(mode(&models), 0o711);
    } else {
        assert!(matches!(
            Store::open(&models),
            Err(StoreError::Dir(PathError::BadMode { mode: 0o755, .. }))
        ));
    }
}

#[test]
fn a_partial_download_is_hashed_across_attempts_and_installed() {
    let dir = TempDir::new("partial");
    let store = dir.store();
    let bytes = fake_gguf(40, 5000);
    let e = entry("m", "1.0.0", &bytes);
    let part = store.dir().join(".partial/m@1.0.0.part");
    let validator = store.dir().join(".partial/m@1.0.0.validator");

    let mut p = store.open_partial(&e).unwrap();
    assert_eq!((p.len(), p.validator()), (0, None));
    p.append(&bytes[..1234]).unwrap();
    p.set_validator(Some("\"abc\"")).unwrap();
    drop(p);
    assert_eq!(mode(&part), 0o600);
    assert_eq!(mode(&validator), 0o600);
    assert_eq!(mode(&store.dir().join(".partial")), 0o700);
    // A stale temp file of a dead process in .partial goes at the next open.
    let dead = store
        .dir()
        .join(format!(".partial/{TEMP_PREFIX}{}-0", u32::MAX));
    std::fs::write(&dead, b"x").unwrap();
    let store = Store::open(store.dir()).unwrap();
    assert!(!dead.exists());
    assert!(part.exists(), "partial downloads survive a restart");

    let mut p = store.open_partial(&e).unwrap();
    assert_eq!((p.len(), p.validator()), (1234, Some("\"abc\"")));
    // The second download of the same model waits for this one.
    assert!(matches!(
        store.open_partial(&e),
        Err(StoreError::Busy { .. })
    ));
    p.append(&bytes[1234..]).unwrap();
    // Past the entry's size nothing is written.
    assert!(matches!(p.append(b"x"), Err(StoreError::Oversize { .. })));
    let m = store.install_partial(p).unwrap();
    assert_eq!(m.digest, e.sha256);
    assert_eq!(mode(&m.path), 0o444);
    assert!(!part.exists());
    assert!(!validator.exists());
    assert_eq!(leftovers(&store), vec![".partial".to_string()]);
    store.open_verified(&e.id, &e.version).unwrap();
}

#[test]
fn a_partial_that_cannot_be_the_model_is_refused_or_emptied() {
    let dir = TempDir::new("partial-bad");
    let store = dir.store();
    let bytes = fake_gguf(41, 3000);
    let e = entry("m", "1.0.0", &bytes);
    let part = store.dir().join(".partial/m@1.0.0.part");

    // Not a GGUF header: refused at the 8th byte.
    let mut p = store.open_partial(&e).unwrap();
    assert!(matches!(
        p.append(b"PK\x03\x04\0\0\0\0rest"),
        Err(StoreError::NotGguf { .. })
    ));
    assert_eq!(p.len(), 0);
    // A short file is not installed; a wrong one is deleted.
    p.append(&bytes[..100]).unwrap();
    assert!(matches!(
        store.install_partial(p),
        Err(StoreError::SizeMismatch { .. })
    ));
    assert!(!part.exists());
    let mut other = bytes.clone();
    other[2000] ^= 1;
    let mut p = store.open_partial(&e).unwrap();
    p.append(&other).unwrap();
    assert!(matches!(
        store.install_partial(p),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(!part.exists());
    assert!(store.list().unwrap().is_empty());

    // A leftover longer than the entry, or not GGUF, starts over.
    std::fs::write(&part, [bytes.as_slice(), b"more"].concat()).unwrap();
    assert_eq!(store.open_partial(&e).unwrap().len(), 0);
    std::fs::write(&part, b"<html>not a model</html>").unwrap();
    assert_eq!(store.open_partial(&e).unwrap().len(), 0);
    // A validator that is not one printable line is not kept.
    let mut p = store.open_partial(&e).unwrap();
    p.set_validator(Some("bad\nvalue")).unwrap();
    assert_eq!(p.validator(), None);
    p.restart().unwrap();
    assert_eq!(p.len(), 0);
}
