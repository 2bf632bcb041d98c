//! `FLOW_POLICY_PATH` at build time moves the enterprise policy file (tests
//! use it); nothing at run time can. Rebuild when it changes, so a binary
//! never keeps a path its builder no longer asked for.

fn main() {
    println!("cargo:rerun-if-env-changed=FLOW_POLICY_PATH");
}
