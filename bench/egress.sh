#!/usr/bin/env bash
# Egress benchmark behind the README's figures (not a timed test): added
# latency (p50, p99) and sequential throughput of the same GET to a loopback
# upstream, made directly, through the real egress gateway under its real
# profile (IP-literal origin, and a DNS-name origin resolved per request) and
# through Squid with bench/squid.conf; >= 5 interleaved rounds.
# Usage: bench/egress.sh [ROUNDS] [REQUESTS] [BODY_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; requests=${2:-2000}; body=${3:-1024}
if ! command -v squid >/dev/null && [ ! -x /usr/sbin/squid ]; then
  echo "installing squid for the comparison"
  apt-get install -y -qq squid >/dev/null
fi
squid_bin=$(command -v squid || echo /usr/sbin/squid)
cargo build --release -q -p flow-egress-gateway -p flow-tests --bins
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed "s/@PORT@/$port/" bench/squid.conf >"$tmp/squid.conf"
"$squid_bin" -k parse -f "$tmp/squid.conf" >/dev/null 2>&1 || { echo "squid.conf does not parse:"; "$squid_bin" -k parse -f "$tmp/squid.conf"; exit 1; }
"$squid_bin" -N -f "$tmp/squid.conf" &
squid_pid=$!
cleanup() { kill "$squid_pid" 2>/dev/null || true; wait "$squid_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
  sleep 0.1
done
echo "## egress: direct vs gateway vs squid ($rounds rounds x $requests sequential GETs, $body-byte body)"
echo "squid $("$squid_bin" -v | head -1 | sed 's/.*Version //'), kernel $(uname -r), $(nproc) CPUs"
target/release/flow-bench-egress --rounds "$rounds" --requests "$requests" --body "$body" --squid "127.0.0.1:$port"
