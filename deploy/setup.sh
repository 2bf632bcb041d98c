#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install what is
# missing, build Flow, start the broker, show the attested components and the
# capability table, make a real request over a capability, and stop.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in gcc libc6-dev util-linux procps; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --workspace --bins
flow=target/release/flow
$flow doctor || true
$flow up &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do $flow status >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
$flow status
$flow caps
$flow ping --count 1000 --size 64
$flow down
wait $broker || true
trap - EXIT
$flow audit verify
