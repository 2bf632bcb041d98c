#!/usr/bin/env bash
# The test command (README's second command; .ci/run runs exactly this).
# Builds every binary first: the integration and escape tests run the real
# `flow`, component and probe binaries in the real sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
# The enterprise policy file's path is fixed at build time (default
# /etc/flow/policy.toml). The test build reads it from a test location, so the
# policy tests (tests/tests/egress.rs) never touch a real policy; the release
# build from deploy/setup.sh keeps the default. /run is root-owned, as the
# broker requires of the policy's directory.
export FLOW_POLICY_PATH=/run/flow-test-policy/policy.toml
cargo fmt --all -- --check
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads=2
