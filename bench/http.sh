#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, against a
# minimal hyper server returning the same bytes (host/examples/baseline_hyper.rs), with the same
# load generator (wrk) in the same run. Prints both figures and their ratio (goal: >= 0.95).
#
# Usage: bench/http.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }

cargo build --release -q -p plugin-host --bin plugin-host --example baseline_hyper
config=$(cargo run --release -q -p sample-plugins --bin stage-samples -- target/bench-samples)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/release/plugin-host serve --config "$config" --listen 127.0.0.1:18181 --log-level warn \
  >/dev/null &
pids+=($!)
target/release/examples/baseline_hyper 127.0.0.1:18182 >/dev/null &
pids+=($!)
for port in 18181 18182; do
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/c/hello" >/dev/null && break
    sleep 0.1
  done
done
[ "$(curl -s http://127.0.0.1:18181/c/hello)" = "hello from C" ] || { echo "plugin-host is not serving"; exit 1; }

rps() {
  wrk -t1 -c"$connections" -d"${seconds}s" "http://127.0.0.1:$1/c/hello" |
    awk '/Requests\/sec/ { print $2 }'
}
# Alternate the two servers so that drift of the shared machine hits both alike.
wrk -t1 -c"$connections" -d2s http://127.0.0.1:18181/c/hello >/dev/null
wrk -t1 -c"$connections" -d2s http://127.0.0.1:18182/c/hello >/dev/null
host_a=$(rps 18181); base_a=$(rps 18182); host_b=$(rps 18181); base_b=$(rps 18182)
awk -v ha="$host_a" -v hb="$host_b" -v ba="$base_a" -v bb="$base_b" 'BEGIN {
  h = (ha + hb) / 2; b = (ba + bb) / 2
  printf "plugin-host serve (C greeter GET /c/hello): %.0f req/s (runs: %s, %s)\n", h, ha, hb
  printf "minimal hyper server, same bytes:           %.0f req/s (runs: %s, %s)\n", b, ba, bb
  printf "ratio: %.3f (goal >= 0.95)\n", h / b
}'
