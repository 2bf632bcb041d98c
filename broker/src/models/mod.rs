//! Models: the catalog of model files Flow accepts, the store that keeps
//! verified copies of them, downloads from the Model Hub, and the checks
//! made before one is run.
//!
//! **Invariant:** a model file reaches llama-server only as the open file
//! descriptor whose contents [`Store::open_verified`] hashed against the
//! catalog; never by a path that could be swapped between check and use.

pub mod catalog;
mod gguf;
pub mod hub;
pub mod store;
#[cfg(test)]
mod test_support;

pub use catalog::{Catalog, CatalogEntry, CatalogError, Source};
pub use gguf::{check_gguf_header, GgufError, GGUF_HEADER_LEN};
pub use store::{Store, StoreError, StoredModel, VerifyOutcome};

/// `MemAvailable` from `/proc/meminfo`, in MiB (rounded down); `None` when it
/// cannot be read (not Linux, or a kernel older than 3.14).
pub fn mem_available_mb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available_mb(&meminfo)
}

fn parse_mem_available_mb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let mut parts = rest.split_whitespace();
        let kb: u64 = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB") && parts.next().is_none()).then_some(kb / 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_parsed_in_mib() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   12345678 kB\nBuffers:          100 kB\n";
        assert_eq!(parse_mem_available_mb(meminfo), Some(12_056));
        assert_eq!(parse_mem_available_mb("MemAvailable:   1023 kB\n"), Some(0));
        assert_eq!(parse_mem_available_mb("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available_mb("MemAvailable: lots kB\n"), None);
        assert_eq!(parse_mem_available_mb("MemAvailable: 1024 MB\n"), None);
    }

    #[test]
    fn mem_available_reads_this_machine() {
        // Linux only, as Flow is; the value is whatever the machine has.
        let mb = mem_available_mb().unwrap();
        assert!(mb > 0);
    }
}
