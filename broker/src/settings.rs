//! Per-user settings: `$XDG_CONFIG_HOME/flow/settings.toml` (optional).
//!
//! ```toml
//! [spool]
//! retention_days = 30          # runs older than this are pruned (0: keep)
//!
//! [models.smollm2-135m-instruct]
//! memory_floor_mb = 512        # may only raise the catalog's floor
//!
//! [cloud]
//! enabled = false              # cloud AI providers
//!
//! [services]
//! enabled = false              # service nodes (REST integrations)
//! allowed_ids = ["*"]          # catalog ids they may use
//! allow_ai_output = false      # AI output / spool content may reach them
//!
//! [hub]
//! enabled = false              # Model Hub downloads
//! url = ""                     # https://hub.example.com
//! signing_key = ""             # ed25519 public key (64 hex) of the hub catalog
//! allow_cidrs = []             # non-global ranges an internal mirror may use
//!
//! [tls]
//! ca_bundle = ""               # enterprise CA bundle (PEM, absolute path)
//!
//! [egress]
//! dns_servers = []             # default: /etc/resolv.conf
//! ```
//!
//! Every key is also accepted dotted (`services.enabled = true`). The file
//! only supplies values: [`crate::policy::Effective`] combines them with the
//! enterprise policy, which may lock any key, and is the only place a setting
//! is read from. An unreadable or invalid file stops the broker with
//! file:line:key.

use crate::policy::{parse_settings, FileValue, PolicyError};
use std::path::Path;

/// The values of the settings file at `path` (none if it does not exist).
pub(crate) fn load(path: &Path) -> Result<Vec<FileValue>, PolicyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PolicyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    parse_settings(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line_and_key() {
        let dir = std::env::temp_dir().join(format!("flow-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("settings.toml");
        std::fs::write(&p, "[spool]\nretention_days = 30\nbogus = 1\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("settings.toml:3:spool.bogus: unknown key"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[models.m]\nmemory_floor_mb = 10\n[services]\nenabled = true\n",
        )
        .unwrap();
        let v = load(&p).unwrap();
        let keys: Vec<(&str, usize)> = v.iter().map(|f| (f.key.as_str(), f.line)).collect();
        assert_eq!(
            keys,
            vec![("models.m.memory_floor_mb", 2), ("services.enabled", 4)]
        );
        assert!(load(&dir.join("absent.toml")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
