#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine: install what is
# missing, build Flow, build llama-server and fetch SmolLM2 (pinned, cached),
# start the runtime, import the model, run the demo flow (its AI node is
# answered by SmolLM2 through the sandboxed worker and llama-server,
# streamed and audited), show status and the capability table, stop, and
# verify the audit log.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
missing=()
for pkg in gcc g++ make cmake unzip libc6-dev util-linux procps e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "== building llama-server and fetching the model (cached after the first run)"
out=$(./deploy/install-llama.sh)
llama_bin=$(echo "$out" | awk '/^llama-server /{print $2}')
model=$(echo "$out" | awk '/^model /{print $2}')
echo "== building Flow"
cargo build --release --workspace --bins
flow=$PWD/target/release/flow
$flow doctor || true
$flow llama install "$llama_bin"
$flow up 2>/tmp/flow-up.$$.log &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do $flow status >/dev/null 2>&1 && break; sleep 0.1; done
$flow models import "$model"
echo "== demo flow (examples/haiku.toml)"
$flow run examples/haiku.toml --input topic=rain
echo "== status and capabilities"
$flow status
$flow caps
echo "== egress (off by default: no gateway process, and why)"
$flow policy show | head -3
$flow down
wait $broker || true
trap - EXIT
$flow audit verify
