//! Builds the two static C helpers with the system C compiler:
//! - `flow-probe` (probe/probe.c), run inside a profile; its path is exported
//!   as `FLOW_PROBE_BIN`;
//! - `flow-landed` (probe/landed.c), the libc-free ELF that the `memfd-exec`
//!   attack embeds; its path is exported as `FLOW_LANDED_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn compile(cc: &str, out: &Path, src: &str, extra: &[&str]) -> Result<(), String> {
    println!("cargo:rerun-if-changed={src}");
    let status = Command::new(cc)
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(src)
        .status()
        .map_err(|e| {
            format!("cannot run the C compiler {cc:?}: {e} (install gcc/libc6-dev or set CC)")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cc} failed to build {src} ({status}): a static libc (libc6-dev) is needed"
        ))
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        eprintln!("OUT_DIR is not set: build.rs must run under cargo");
        std::process::exit(1)
    };
    let probe = out_dir.join("flow-probe");
    let landed = out_dir.join("flow-landed");
    let built = compile(&cc, &probe, "probe/probe.c", &[]).and_then(|()| {
        compile(
            &cc,
            &landed,
            "probe/landed.c",
            &[
                "-nostdlib",
                "-fno-stack-protector",
                "-fno-pie",
                "-no-pie",
                "-Wl,--build-id=none",
            ],
        )
    });
    if let Err(e) = built {
        eprintln!("error: {e}");
        std::process::exit(1)
    }
    println!("cargo:rustc-env=FLOW_PROBE_BIN={}", probe.display());
    println!("cargo:rustc-env=FLOW_LANDED_BIN={}", landed.display());
}
