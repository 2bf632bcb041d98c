#!/usr/bin/env bash
# Inference benchmark behind the README's figures (not a timed test):
# generation tokens/s and time to first token through the whole stack
# (`flow run` of bench/one-ai-node.toml, streaming) against the same managed
# llama-server instance called directly over its socket (flow-bench-llama)
# with the identical request body (cache_prompt false, ignore_eos true,
# n_predict 256). Both measured at the client, from writing the request to
# reading the first and the last token. N interleaved pairs (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-10}
out=$(./deploy/install-llama.sh)
llama_bin=$(echo "$out" | awk '/^llama-server /{print $2}')
model=$(echo "$out" | awk '/^model /{print $2}')
cargo build --release --workspace --bins -q
flow=$PWD/target/release/flow
direct=$PWD/target/release/flow-bench-llama
tmp=$(mktemp -d); chmod 755 "$tmp"; mkdir -p "$tmp/run"; chmod 711 "$tmp/run"
export HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/run XDG_STATE_HOME=$tmp/state XDG_DATA_HOME=$tmp/data XDG_CONFIG_HOME=$tmp/config
cleanup() { $flow down >/dev/null 2>&1 || true; chattr -a "$tmp/state/flow/audit.log" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
$flow llama install "$llama_bin" >/dev/null
$flow up 2>"$tmp/up.log" &
for _ in $(seq 100); do $flow status >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
$flow models import "$model" >/dev/null
sock=$XDG_RUNTIME_DIR/flow/llama/llama.sock
$flow run bench/one-ai-node.toml --json >/dev/null   # starts llama-server, warms up
$direct --socket "$sock" >/dev/null
results=()
for i in $(seq "$pairs"); do
  f=$($flow run bench/one-ai-node.toml --json)
  d=$($direct --socket "$sock")
  results+=("$(python3 -c 'import json,sys; f=json.loads(sys.argv[1]); d=json.loads(sys.argv[2]); c=f["client"]; print(json.dumps({"f_first":c["first_token_ms"],"f_last":c["last_token_ms"],"f_n":c["token_events"],"d_first":d["first_token_ms"],"d_last":d["last_token_ms"],"d_n":d["token_events"],"startup":f["startup_ms"]}))' "$f" "$d")")
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(a) for a in sys.argv[1:]]
def tps(first, last, n): return (n - 1) / ((last - first) / 1000.0)
ratios, added, f_tps, d_tps, f_ttft, d_ttft, startup = [], [], [], [], [], [], []
for r in rows:
    a = tps(r["f_first"], r["f_last"], r["f_n"]); b = tps(r["d_first"], r["d_last"], r["d_n"])
    f_tps.append(a); d_tps.append(b); ratios.append(a / b)
    f_ttft.append(r["f_first"]); d_ttft.append(r["d_first"]); added.append(r["f_first"] - r["d_first"])
    startup.append(r["startup"])
m = statistics.median
print(f"pairs: {len(rows)} (interleaved), 256 tokens each, ignore_eos, cache_prompt false")
print(f"tokens/s   flow run {m(f_tps):.1f}  direct {m(d_tps):.1f}  ratio median {m(ratios)*100:.1f}% (min {min(ratios)*100:.1f}%, max {max(ratios)*100:.1f}%); target >= 99%")
print(f"TTFT (ms)  flow run {m(f_ttft):.2f}  direct {m(d_ttft):.2f}  added median {m(added):.2f} ms (min {min(added):.2f}, max {max(added):.2f}); target <= 2 ms")
print(f"flow run start-up (parse, validate, connect; before the request): median {m(startup):.2f} ms")
PY
