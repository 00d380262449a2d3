#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, against a
# minimal hyper server returning the same bytes (host/examples/baseline_hyper.rs), with the same
# load generator (wrk) in the same run. Prints both figures and their ratio (goal: >= 0.95).
#
# Usage: bench/http.sh [seconds per run, default 5] [connections, default 64] [pairs, default 6]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-6}
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }

cargo build --release -q -p plugin-host --bin plugin-host --example baseline_hyper
config=$(cargo run --release -q -p sample-plugins --bin stage-samples -- target/bench-samples)

# With two or more cores, the servers share core 0 and wrk runs alone on core 1, so that the
# load generator does not compete with the server it measures.
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"${server_cpu[@]}" target/release/plugin-host serve --config "$config" --listen 127.0.0.1:18181 --log-level warn \
  >/dev/null &
pids+=($!)
"${server_cpu[@]}" target/release/examples/baseline_hyper 127.0.0.1:18182 >/dev/null &
pids+=($!)
for port in 18181 18182; do
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/c/hello" >/dev/null && break
    sleep 0.1
  done
done
[ "$(curl -s http://127.0.0.1:18181/c/hello)" = "hello from C" ] || { echo "plugin-host is not serving"; exit 1; }

rps() {
  "${client_cpu[@]}" wrk -t1 -c"$connections" -d"${seconds}s" "http://127.0.0.1:$1/c/hello" |
    awk '/Requests\/sec/ { print $2 }'
}
# The machine is shared and noisy: measure the two servers in alternating pairs (which one goes
# first alternates too) and report the median of the per-pair ratios, which drift affects least.
wrk -t1 -c"$connections" -d2s http://127.0.0.1:18181/c/hello >/dev/null
wrk -t1 -c"$connections" -d2s http://127.0.0.1:18182/c/hello >/dev/null
results=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then h=$(rps 18181); b=$(rps 18182); else b=$(rps 18182); h=$(rps 18181); fi
  echo "round $round: plugin-host $h req/s, hyper $b req/s"
  results+=("$h $b")
done
median=$(printf '%s\n' "${results[@]}" | awk '{ printf "%.4f\n", $1 / $2 }' | sort -n |
  awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }')
printf '%s\n' "${results[@]}" | awk -v seconds="$seconds" -v connections="$connections" -v median="$median" '
  { hs += $1; bs += $2 }
  END {
    printf "wrk -t1 -c%d, %d x %ds per server\n", connections, NR, seconds
    printf "plugin-host serve (C greeter GET /c/hello): %.0f req/s (mean)\n", hs / NR
    printf "minimal hyper server, same bytes:           %.0f req/s (mean)\n", bs / NR
    printf "ratio: %.3f (median of %d pairs; goal >= 0.95)\n", median, NR
  }'
