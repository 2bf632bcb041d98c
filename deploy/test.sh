#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Builds every binary first: the integration and escape tests run the real
# `flow`, component and probe binaries in the real sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads=2
