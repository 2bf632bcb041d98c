//! Connection credentials in the OS keyring, and nowhere else.
//!
//! The store is chosen once, when the broker starts: the Secret Service
//! (the desktop keyring) if a session bus answers with one, otherwise the
//! kernel's keyutils store in the user's *persistent* keyring
//! (`keyctl_get_persistent(2)`), which outlives login sessions but not a
//! reboot. Both come from the `keyring` v4 ecosystem (`keyring-core` with an
//! explicit store); there is no file-backed, sample or mock store.
//!
//! A credential is bound to the origin (`scheme://host:port`) it was added
//! for: the origin is part of the entry's name
//! (`flow-connection:NAME@ORIGIN`), so asking for the same connection name
//! with another origin finds nothing, and a credential can never be handed
//! out for a place it was not added for.
//!
//! **Invariant:** only the broker calls this module (every sandbox profile's
//! seccomp allowlist lacks `keyctl`, `add_key` and `request_key`); a secret
//! read here goes only into a `proto::egress::Secret`, which zeroes itself
//! and never prints its value. Nothing here logs a secret.

use keyring_core::{CredentialStore, Entry};
use proto::egress::{Origin, Secret};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every Flow entry (keyutils description; Secret Service
/// `service` attribute).
const SERVICE: &str = "flow-connection";

/// The keyutils user-key payload limit.
const MAX_SECRET: usize = 32_767;

/// How long the Secret Service may take to answer before Flow falls back to
/// keyutils.
const SECRET_SERVICE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which store holds the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    SecretService,
    Keyutils,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretService => "secret-service",
            StoreKind::Keyutils => "keyutils",
        }
    }

    pub fn audit(self) -> audit::KeyStore {
        match self {
            StoreKind::SecretService => audit::KeyStore::SecretService,
            StoreKind::Keyutils => audit::KeyStore::Keyutils,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential store is available: the Secret Service did not answer ({secret_service}) and the kernel keyring cannot be used ({keyutils}): run 'flow doctor'; in a container, allow the keyctl and add_key system calls")]
    Unavailable {
        secret_service: String,
        keyutils: String,
    },
    #[error("{0}")]
    BadName(#[from] audit::IdError),
    #[error("the secret for connection {name} is empty: type or paste it at the prompt, or pipe it on standard input")]
    Empty { name: String },
    #[error("the secret for connection {name} is {len} bytes; the limit is {MAX_SECRET}")]
    TooLarge { name: String, len: usize },
    #[error("cannot {op} the credential of connection {name} in the {store} store: {message}: run 'flow doctor'", store = store.as_str())]
    Store {
        op: &'static str,
        name: String,
        store: StoreKind,
        message: String,
    },
}

/// The credential store the broker uses.
pub struct Credentials {
    kind: StoreKind,
    /// `Err`: no store could be opened; every call fails with this reason
    /// (see [`Credentials::unavailable`]).
    store: Result<Arc<CredentialStore>, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("available", &self.store.is_ok())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The Secret Service if a session bus answers with one, else the
    /// kernel keyutils store in the user's persistent keyring.
    pub fn open() -> Result<Credentials, CredentialError> {
        let secret_service = match open_secret_service() {
            Ok(store) => {
                return Ok(Credentials {
                    kind: StoreKind::SecretService,
                    store: Ok(store),
                })
            }
            Err(e) => e,
        };
        Credentials::open_keyutils().map_err(|e| match e {
            CredentialError::Unavailable { keyutils, .. } => CredentialError::Unavailable {
                secret_service,
                keyutils,
            },
            other => other,
        })
    }

    /// The kernel keyutils store, whatever the session offers (tests use
    /// this on machines that also have a Secret Service).
    pub fn open_keyutils() -> Result<Credentials, CredentialError> {
        let unavailable = |keyutils: String| CredentialError::Unavailable {
            secret_service: "not tried".into(),
            keyutils,
        };
        // The store links every key it adds into the persistent keyring when
        // it can, and silently does not when it cannot: check that it can, so
        // entries never live in a session keyring only.
        keyctl::persistent_keyring().map_err(|e| {
            unavailable(format!(
                "keyctl_get_persistent failed: {e}; the kernel needs CONFIG_PERSISTENT_KEYRINGS"
            ))
        })?;
        let store = linux_keyutils_keyring_store::Store::new()
            .map_err(|e| unavailable(lower(&e.to_string())))?;
        Ok(Credentials {
            kind: StoreKind::Keyutils,
            store: Ok(store),
        })
    }

    /// A stand-in for a store that could not be opened (`open`'s error):
    /// the broker still runs, and every credential call fails with that
    /// reason, so connections that need a credential are missing and say
    /// why.
    pub fn unavailable(e: &CredentialError) -> Credentials {
        Credentials {
            kind: StoreKind::Keyutils,
            store: Err(e.to_string()),
        }
    }

    /// `Ok` if a store is open.
    pub fn available(&self) -> Result<(), String> {
        self.store.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn store(
        &self,
        op: &'static str,
        name: &str,
    ) -> Result<&Arc<CredentialStore>, CredentialError> {
        self.store.as_ref().map_err(|why| CredentialError::Store {
            op,
            name: name.to_string(),
            store: self.kind,
            message: why.clone(),
        })
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// What a user should know about the store.
    pub fn note(&self) -> &'static str {
        note(self.kind)
    }

    fn entry(&self, name: &str, origin: &str) -> Result<Entry, CredentialError> {
        let user = format!("{name}@{origin}");
        let label = format!("Flow connection {name} ({origin})");
        let description = format!("{SERVICE}:{user}");
        let mut mods: HashMap<&str, &str> = HashMap::new();
        match self.kind {
            StoreKind::Keyutils => {
                mods.insert("description", &description);
            }
            StoreKind::SecretService => {
                mods.insert("label", &label);
            }
        }
        Entry::new_in_store_with_modifiers(self.store("open", name)?, SERVICE, &user, &mods)
            .map_err(|e| self.err("open", name, &e))
    }

    fn err(&self, op: &'static str, name: &str, e: &keyring_core::Error) -> CredentialError {
        CredentialError::Store {
            op,
            name: name.to_string(),
            store: self.kind,
            message: lower(&e.to_string()),
        }
    }

    /// Store `secret` for connection `name`, bound to `origin`; an earlier
    /// credential of that name (for any origin) is replaced.
    pub fn add(&self, name: &str, origin: &Origin, secret: &Secret) -> Result<(), CredentialError> {
        audit::ConnectionName::parse(name)?;
        let len = secret.expose().len();
        if len == 0 {
            return Err(CredentialError::Empty {
                name: name.to_string(),
            });
        }
        if len > MAX_SECRET {
            return Err(CredentialError::TooLarge {
                name: name.to_string(),
                len,
            });
        }
        let origin = origin.to_string();
        self.entry(name, &origin)?
            .set_secret(secret.expose())
            .map_err(|e| self.err("store", name, &e))?;
        // Only now drop what the name held for other origins: a failed add
        // leaves the old credential in place.
        for (n, o) in self.list()? {
            if n == name && o != origin {
                self.delete(name, &o)?;
            }
        }
        Ok(())
    }

    /// The credential of connection `name` for `origin`; `None` if there is
    /// none, or if the one stored is bound to another origin.
    pub fn get(&self, name: &str, origin: &Origin) -> Result<Option<Secret>, CredentialError> {
        if audit::ConnectionName::parse(name).is_err() {
            return Ok(None);
        }
        match self.entry(name, &origin.to_string())?.get_secret() {
            Ok(bytes) => Ok(Some(Secret::new(bytes))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.err("read", name, &e)),
        }
    }

    /// Remove connection `name`'s credential; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, CredentialError> {
        audit::ConnectionName::parse(name)?;
        let mut any = false;
        for (n, o) in self.list()? {
            if n == name {
                any |= self.delete(name, &o)?;
            }
        }
        Ok(any)
    }

    fn delete(&self, name: &str, origin: &str) -> Result<bool, CredentialError> {
        match self.entry(name, origin)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.err("remove", name, &e)),
        }
    }

    /// Every stored connection: `(name, origin)`, sorted.
    pub fn list(&self) -> Result<Vec<(String, String)>, CredentialError> {
        self.store("list", "*")?;
        let users: Vec<String> = match self.kind {
            StoreKind::Keyutils => keyctl::persistent_descriptions()
                .map_err(|e| CredentialError::Store {
                    op: "list",
                    name: "*".into(),
                    store: self.kind,
                    message: e.to_string(),
                })?
                .into_iter()
                .filter_map(|d| {
                    d.strip_prefix(SERVICE)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(str::to_string)
                })
                .collect(),
            StoreKind::SecretService => {
                let spec = HashMap::from([("service", SERVICE)]);
                self.store("list", "*")?
                    .search(&spec)
                    .map_err(|e| self.err("list", "*", &e))?
                    .iter()
                    .filter_map(|e| e.get_attributes().ok()?.get("username").cloned())
                    .collect()
            }
        };
        let mut out: Vec<(String, String)> = users
            .iter()
            .filter_map(|u| {
                let (n, o) = u.split_once('@')?;
                audit::ConnectionName::parse(n).ok()?;
                Some((n.to_string(), o.to_string()))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// What a user should know about a store.
pub fn note(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Keyutils => "entries live in the kernel's persistent keyring and do not survive a reboot (nor the keyring going unused for kernel.keys.persistent_keyring_expiry seconds, 3 days by default): re-add them with 'flow connections add NAME'",
        StoreKind::SecretService => "entries live in the Secret Service (the desktop keyring) and survive reboots; it must be unlocked for the broker to use them",
    }
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Connect to the Secret Service, giving up after a few seconds (a bus that
/// activates a keyring daemon may never answer).
fn open_secret_service() -> Result<Arc<CredentialStore>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("flow-secret-service".into())
        .spawn(move || {
            let r = zbus_secret_service_keyring_store::Store::new()
                .map(|s| s as Arc<CredentialStore>)
                .map_err(|e| lower(&e.to_string()));
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.recv_timeout(SECRET_SERVICE_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {} s",
            SECRET_SERVICE_TIMEOUT.as_secs()
        )),
    }
}

/// The few keyutils calls the store crate does not offer: finding the
/// persistent keyring and listing it.
mod keyctl {
    const KEYCTL_DESCRIBE: libc::c_long = 6;
    const KEYCTL_READ: libc::c_long = 11;
    const KEYCTL_GET_PERSISTENT: libc::c_long = 22;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

    fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// The calling user's persistent keyring, linked into the session
    /// keyring (as the store crate does, so searches from the session find
    /// its keys).
    pub fn persistent_keyring() -> std::io::Result<i32> {
        // SAFETY: keyctl(KEYCTL_GET_PERSISTENT, uid, dest) takes two integer
        // arguments and no pointers; -1 means the caller's own uid.
        let r = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_GET_PERSISTENT,
                -1 as libc::c_long,
                KEY_SPEC_SESSION_KEYRING,
            )
        };
        let id = check(r)?;
        i32::try_from(id).map_err(|_| std::io::Error::from_raw_os_error(libc::ERANGE))
    }

    /// keyctl `op` that fills a buffer: asks for the size, then reads,
    /// retrying if the contents grew in between.
    fn read_buffer(op: libc::c_long, id: i32) -> std::io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // SAFETY: the kernel writes at most `buf.capacity()` bytes to
            // the pointer (and none when it is null with length 0); it
            // returns the full size, which may exceed the buffer.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    op,
                    libc::c_long::from(id),
                    if buf.capacity() == 0 {
                        std::ptr::null_mut()
                    } else {
                        buf.as_mut_ptr()
                    },
                    buf.capacity(),
                )
            };
            let need = usize::try_from(check(r)?)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::ERANGE))?;
            if need <= buf.capacity() {
                // SAFETY: the kernel initialised the first `need` bytes.
                unsafe { buf.set_len(need) };
                return Ok(buf);
            }
            buf = Vec::with_capacity(need);
        }
    }

    /// Descriptions of the user keys linked in the persistent keyring.
    pub fn persistent_descriptions() -> std::io::Result<Vec<String>> {
        let ring = persistent_keyring()?;
        let raw = read_buffer(KEYCTL_READ, ring)?;
        let mut out = Vec::new();
        for chunk in raw.chunks_exact(4) {
            let id = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            // A key may vanish (be invalidated) between the two calls.
            let Ok(desc) = read_buffer(KEYCTL_DESCRIBE, id) else {
                continue;
            };
            // "type;uid;gid;perm;description\0"
            let text = String::from_utf8_lossy(desc.strip_suffix(&[0]).unwrap_or(&desc));
            let mut parts = text.splitn(5, ';');
            if parts.next() != Some("user") {
                continue;
            }
            if let Some(d) = parts.nth(3) {
                out.push(d.to_string());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::egress::Scheme;

    fn origin(host: &str, port: u16) -> Origin {
        Origin {
            scheme: Scheme::Https,
            host: host.into(),
            port,
        }
    }

    /// The real kernel store: add, get, list, origin binding, replace,
    /// remove. Runs wherever keyctl is allowed (CI: root, no session bus).
    #[test]
    fn keyutils_round_trip_and_origin_binding() {
        let c = Credentials::open_keyutils().expect("the kernel keyring must be usable here");
        assert_eq!(c.kind(), StoreKind::Keyutils);
        assert!(c.note().contains("do not survive a reboot"));
        let name = format!("flow-test-{}", std::process::id());
        let a = origin("api.example.com", 443);
        let b = origin("evil.example.com", 443);
        let a_other_port = origin("api.example.com", 8443);
        let _ = c.remove(&name);

        assert_eq!(c.get(&name, &a).unwrap(), None);
        c.add(&name, &a, &Secret::new(b"s3cret-token".to_vec()))
            .unwrap();
        assert_eq!(c.get(&name, &a).unwrap().unwrap().expose(), b"s3cret-token");
        // Bound to scheme://host:port: any other origin finds nothing.
        assert_eq!(c.get(&name, &b).unwrap(), None);
        assert_eq!(c.get(&name, &a_other_port).unwrap(), None);
        let http = Origin {
            scheme: Scheme::Http,
            ..a.clone()
        };
        assert_eq!(c.get(&name, &http).unwrap(), None);
        // Listed from the persistent keyring itself.
        let mine: Vec<_> = c
            .list()
            .unwrap()
            .into_iter()
            .filter(|(n, _)| *n == name)
            .collect();
        assert_eq!(
            mine,
            vec![(name.clone(), "https://api.example.com:443".into())]
        );

        // Re-adding for another origin moves the binding.
        c.add(&name, &b, &Secret::new(b"second".to_vec())).unwrap();
        assert_eq!(c.get(&name, &a).unwrap(), None);
        assert_eq!(c.get(&name, &b).unwrap().unwrap().expose(), b"second");
        let n = c
            .list()
            .unwrap()
            .into_iter()
            .filter(|(n, _)| *n == name)
            .count();
        assert_eq!(n, 1);

        assert!(c.remove(&name).unwrap());
        assert_eq!(c.get(&name, &b).unwrap(), None);
        assert!(!c.list().unwrap().iter().any(|(n, _)| *n == name));
        assert!(!c.remove(&name).unwrap());

        // Bad input is refused before the keyring is touched.
        assert!(matches!(
            c.add(&name, &a, &Secret::new(Vec::new())),
            Err(CredentialError::Empty { .. })
        ));
        assert!(matches!(
            c.add("Bad Name", &a, &Secret::new(b"x".to_vec())),
            Err(CredentialError::BadName(_))
        ));
        assert_eq!(c.get("Bad Name", &a).unwrap(), None);
    }
}
