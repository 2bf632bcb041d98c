//! Per-user settings: `$XDG_CONFIG_HOME/flow/settings.toml` (optional).
//!
//! ```toml
//! [spool]
//! retention_days = 30          # runs older than this are pruned (0: keep)
//!
//! [models.smollm2-135m-instruct]
//! memory_floor_mb = 512        # may only raise the catalog's floor
//! ```
//!
//! An unreadable or invalid file stops the broker with file:line:key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub spool: SpoolSettings,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

impl Default for SpoolSettings {
    fn default() -> SpoolSettings {
        SpoolSettings {
            retention_days: default_retention(),
        }
    }
}

fn default_retention() -> u32 {
    30
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Raise the model's memory floor (a lower value than the catalog's is
    /// ignored: settings may only make Flow more conservative).
    pub memory_floor_mb: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}: fix its permissions or remove it", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}: fix this setting (see README, 'Settings')", path = path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            SettingsError::Invalid {
                path: path.to_owned(),
                line,
                message: e.message().to_string(),
            }
        })
    }

    /// The effective memory floor of a model: the catalog's, or higher.
    pub fn memory_floor_mb(&self, id: &str, catalog_floor: u64) -> u64 {
        self.models
            .get(id)
            .and_then(|m| m.memory_floor_mb)
            .map_or(catalog_floor, |f| f.max(catalog_floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("flow-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("settings.toml");
        std::fs::write(&p, "[spool]\nretention_days = 30\nbogus = 1\n").unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("settings.toml:3:"), "{e}");
        std::fs::write(&p, "[models.m]\nmemory_floor_mb = 10\n").unwrap();
        let s = Settings::load(&p).unwrap();
        assert_eq!(s.memory_floor_mb("m", 256), 256);
        assert_eq!(s.memory_floor_mb("m", 5), 10);
        assert_eq!(s.memory_floor_mb("other", 5), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
