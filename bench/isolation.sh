#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, run isolated (in a
# worker process, over the process protocol) against the same plugin in-process, with the same
# load generator (wrk) in the same run. Prints the figures and the ratio isolated / in-process
# (goal >= 0.5). Both servers log at `warn`, so that the access log does not count.
#
# Usage: bench/isolation.sh [seconds per run, default 5] [connections, default 64] [rounds, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-4}
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }

cargo build --release -q -p pluglet-host --bin plugin-host
dir=target/bench-isolation
config=$(cargo run --release -q -p sample-plugins --bin stage-samples -- "$dir")
greeter="$dir/$(basename "$(grep -o '"lib[^"]*greeter[^"]*"' "$config" | tr -d '"')")"
printf '[[plugin]]\npath = "%s"\n' "$PWD/$greeter" >"$dir/in-process.toml"
printf '[[plugin]]\npath = "%s"\nisolation = "process"\n' "$PWD/$greeter" >"$dir/isolated.toml"

# With two or more cores, the servers (and the worker) share core 0 and wrk runs alone on core 1.
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"${server_cpu[@]}" target/release/plugin-host serve --config "$dir/in-process.toml" --listen 127.0.0.1:18191 --log-level warn >/dev/null &
pids+=($!)
"${server_cpu[@]}" target/release/plugin-host serve --config "$dir/isolated.toml" --listen 127.0.0.1:18192 --log-level warn >/dev/null &
pids+=($!)
for port in 18191 18192; do
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/c/hello" >/dev/null && break
    sleep 0.1
  done
  [ "$(curl -s "http://127.0.0.1:$port/c/hello")" = "hello from C" ] || { echo "plugin-host on $port is not serving"; exit 1; }
done
rps() {
  "${client_cpu[@]}" wrk -t1 -c"$connections" -d"${seconds}s" "http://127.0.0.1:$1/c/hello" |
    awk '/Requests\/sec/ { print $2 }'
}
for port in 18191 18192; do wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$port/c/hello" >/dev/null; done
results=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then i=$(rps 18191); o=$(rps 18192); else o=$(rps 18192); i=$(rps 18191); fi
  echo "round $round: in-process $i req/s, isolated $o req/s"
  results+=("$i $o")
done
median=$(printf '%s\n' "${results[@]}" | awk '{ printf "%.4f\n", $2 / $1 }' | sort -n |
  awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }')
printf '%s\n' "${results[@]}" | awk -v c="$connections" -v s="$seconds" -v median="$median" '
  { i += $1; o += $2 }
  END {
    printf "wrk -t1 -c%d, %d x %ds per server\n", c, NR, s
    printf "in-process (C greeter GET /c/hello): %.0f req/s (mean)\n", i / NR
    printf "isolated, same plugin file:          %.0f req/s (mean)\n", o / NR
    printf "ratio isolated / in-process: %.3f (median of %d rounds; goal >= 0.5)\n", median, NR
  }'
