#!/usr/bin/env bash
# Kernel benchmarks behind the README's figures (not timed tests):
#  1. capability round trip executor -> worker -> executor (64-byte payload)
#     against a raw socketpair ping-pong, same run, same CPU placement
#     (executor / ping side on CPU 0, worker / echo side on CPU 1), interleaved;
#  2. sandboxed spawn to attested (production reasoning-worker profile),
#     median and p99 of N starts, and bwrap --unshare-all in the same run;
#  3. resident memory of broker + executor + worker at idle.
# Usage: bench/kernel.sh [ROUNDS] [PINGS] [SPAWNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; pings=${2:-20000}; spawns=${3:-200}
command -v bwrap >/dev/null || { echo "installing bubblewrap for the comparison"; apt-get install -y -qq bubblewrap >/dev/null; }
cargo build --release --workspace --bins -q
flow=$PWD/target/release/flow
tmp=$(mktemp -d); chmod 755 "$tmp"; mkdir -p "$tmp/run"; chmod 711 "$tmp/run"
export HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/run XDG_STATE_HOME=$tmp/state XDG_DATA_HOME=$tmp/data XDG_CONFIG_HOME=$tmp/config
cleanup() { $flow down >/dev/null 2>&1 || true; chattr -a "$tmp/state/flow/audit.log" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
$flow up 2>"$tmp/up.log" &
for _ in $(seq 200); do
  n=$($flow status --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for c in d["components"] if c["attested"]))' 2>/dev/null || echo 0)
  [ "$n" = 2 ] && break; sleep 0.1
done
sleep 1
status=$($flow status --json)
pid_of() { echo "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); print([c['pid'] for c in d['components'] if c['component']=='$1'][0])"; }
exe=$(pid_of Executor); wrk=$(pid_of ReasoningWorker); brk=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["broker_pid"])')
taskset -p -c 0 "$exe" >/dev/null; taskset -p -c 1 "$wrk" >/dev/null
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "## idle resident memory (kB)"
r_b=$(rss "$brk"); r_e=$(rss "$exe"); r_w=$(rss "$wrk")
echo "broker $r_b  executor $r_e  worker $r_w  total $((r_b + r_e + r_w)) kB ($(python3 -c "print(round(($r_b+$r_e+$r_w)/1024,1))") MiB; target <= 20 MB)"
$flow ping --count 2000 >/dev/null   # warm up
echo "## capability round trip vs raw socketpair (ns per round trip, 64 bytes)"
ratios=()
for i in $(seq "$rounds"); do
  cap=$($flow ping --count "$pings" --size 64 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nanos_per_round_trip"])')
  raw=$($flow bench raw-pingpong --count "$pings" --size 64 --cpu-a 0 --cpu-b 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["nanos_per_round_trip"])')
  ratio=$(python3 -c "print(round($cap/$raw,3))")
  ratios+=("$ratio")
  printf 'round %d: capability %.0f ns, raw %.0f ns, ratio %s\n' "$i" "$cap" "$raw" "$ratio"
done
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'median ratio {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}); target <= 2.0')" "${ratios[@]}"
$flow down >/dev/null
echo "## sandboxed spawn to attested vs bwrap --unshare-all ($spawns starts each, same run)"
$flow bench spawn --count "$spawns" >"$tmp/spawn.json"
python3 - "$tmp/spawn.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k, v in d.items():
    if v:
        print(f"{k}: median {v['median_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms (n={v['n']})")
f, b = d["flow_spawn_to_attested"], d["bwrap_unshare_all"]
if b:
    print(f"ratio of medians flow/bwrap {f['median_ms'] / b['median_ms']:.2f}; target: median <= 3 ms")
PY
