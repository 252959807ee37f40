#!/usr/bin/env bash
# The store's figure beside redis's on this machine: `dtrain store` and redis-server (Debian) each on a
# free loopback port, 8 synchronous clients each (no pipelining): bench/store_perf against ours,
# `redis-benchmark -c 8 -t set,get -P 1` against redis. Prints both and the ratio (ours / redis).
# usage: bench/store_vs_redis.sh [BUILD_DIR] [CLIENTS] [SECONDS_PER_OP] [REDIS_REQUESTS]
set -euo pipefail
build=${1:-build}
clients=${2:-8}
seconds=${3:-5}
requests=${4:-200000}
dtrain=$build/bin/dtrain
perf=$build/bin/store_perf
for f in "$dtrain" "$perf"; do [ -x "$f" ] || { echo "store_vs_redis: $f not built" >&2; exit 1; }; done
for p in redis-server redis-benchmark; do
  command -v $p >/dev/null || { echo "store_vs_redis: $p not found (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export DTRAIN_JOB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
sport=$(free_port)
DTRAIN_LOG_LEVEL=warn "$dtrain" store --host 127.0.0.1 --port "$sport" 2>"$tmp/store.log" &
pids+=($!)
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "listening on" "$tmp/store.log" && redis-cli -p "$rport" ping >/dev/null 2>&1 && break
  sleep 0.05
done

echo "# machine: $(nproc) cores, $(uname -r); $clients clients each; 3-byte values; no pipelining"
"$perf" --host 127.0.0.1 --port "$sport" --clients "$clients" --seconds "$seconds" | tee "$tmp/ours.txt"
ours=$(sed -n 's/^# mean set\/get ops\/s: \([0-9]*\)$/\1/p' "$tmp/ours.txt")

redis-benchmark -h 127.0.0.1 -p "$rport" -c "$clients" -t set,get -n "$requests" -P 1 -q 2>/dev/null |
  tr '\r' '\n' | grep -E '^(SET|GET): [0-9.]+ requests per second' | tee "$tmp/redis.txt"
rset=$(sed -n 's/^SET: \([0-9.]*\) requests.*/\1/p' "$tmp/redis.txt" | tail -1)
rget=$(sed -n 's/^GET: \([0-9.]*\) requests.*/\1/p' "$tmp/redis.txt" | tail -1)
python3 - "$ours" "$rset" "$rget" <<'PY'
import sys
ours, rset, rget = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
redis = (rset + rget) / 2
print(f"# dtrain store: {ours:.0f} ops/s   redis: {redis:.0f} ops/s (set {rset:.0f}, get {rget:.0f})"
      f"   ratio ours/redis: {ours / redis:.2f} (target >= 0.50)")
sys.exit(0 if ours / redis >= 0.5 else 1)
PY
