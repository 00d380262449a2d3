#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, against a
# minimal hyper server returning the same bytes (host/examples/baseline_hyper.rs), with the same
# load generator (wrk) in the same run. Prints the figures and three ratios:
# - with `--log-level warn` (no access log), against hyper: goal >= 0.95;
# - with the default level (`info`: one access line per request), against hyper: goal >= 0.90.
#   Its stderr goes to a file, so that every line is really formatted and written (by the log
#   writer thread, which shares the server's core); /dev/null would hide the write, and a pipe
#   would add its reader's cost to the server's core. The file is emptied after every run to
#   bound its size;
# - with three no-op hook plugins in front of the route (three instances of the `noop` sample,
#   whose `on_request` and `on_response` do nothing), against none, both at `warn`: the cost of
#   the hook chain itself; goal >= 0.95;
# - with metrics (the default: `GET /metrics`, every request counted) against `--metrics off`,
#   both at `warn`: the cost of the metrics; goal >= 0.97.
# Each server serves the greeter alone, or the greeter behind the three hooks: the staged sample
# configuration has hook plugins of its own.
#
# Usage: bench/http.sh [seconds per run, default 5] [connections, default 64] [rounds, default 6]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-6}
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }

target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p pluglet-host --bin plugin-host --example baseline_hyper
cargo build --release -q -p noop-plugin
dir=target/bench-samples
staged=$(cargo run --release -q -p sample-plugins --bin stage-samples -- "$dir")
greeter="$PWD/$dir/$(basename "$(grep -o '"lib[^"]*greeter[^"]*"' "$staged" | tr -d '"')")"
noop="$target/release/libnoop_plugin.$([ "$(uname)" = Darwin ] && echo dylib || echo so)"
[ -f "$noop" ] || { echo "cargo built no $noop"; exit 1; }
case $noop in /*) ;; *) noop="$PWD/$noop" ;; esac
config="$dir/greeter.toml"
printf '[[plugin]]\npath = "%s"\n' "$greeter" >"$config"
hooked="$dir/greeter-behind-hooks.toml"
for i in 1 2 3; do printf '[[plugin]]\npath = "%s"\nname = "noop%s"\n\n' "$noop" "$i"; done >"$hooked"
cat "$config" >>"$hooked"

# With two or more cores, the servers share core 0 and wrk runs alone on core 1, so that the
# load generator does not compete with the server it measures.
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi

log=target/bench-access.log
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$log"' EXIT
"${server_cpu[@]}" "$target/release/plugin-host" serve --config "$config" --listen 127.0.0.1:18181 --log-level warn \
  >/dev/null &
pids+=($!)
"${server_cpu[@]}" "$target/release/plugin-host" serve --config "$hooked" --listen 127.0.0.1:18184 --log-level warn \
  >/dev/null &
pids+=($!)
"${server_cpu[@]}" "$target/release/plugin-host" serve --config "$config" --listen 127.0.0.1:18185 --log-level warn \
  --metrics off >/dev/null &
pids+=($!)
: >"$log"
env -u RUST_LOG "${server_cpu[@]}" "$target/release/plugin-host" serve --config "$config" --listen 127.0.0.1:18183 \
  >/dev/null 2>>"$log" &
pids+=($!)
"${server_cpu[@]}" "$target/release/examples/baseline_hyper" 127.0.0.1:18182 >/dev/null &
pids+=($!)
for port in 18181 18183 18182 18184 18185; do
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$port/c/hello" >/dev/null && break
    sleep 0.1
  done
done
for port in 18181 18183 18184 18185; do
  [ "$(curl -s "http://127.0.0.1:$port/c/hello")" = "hello from C" ] || { echo "plugin-host on $port is not serving"; exit 1; }
done
# The log writer thread writes shortly after the request.
for _ in $(seq 20); do grep -q 'plugin_host::access' "$log" && break; sleep 0.05; done
grep -q 'plugin_host::access' "$log" || { echo "plugin-host on 18183 writes no access log to $log"; exit 1; }

rps() {
  local r
  r=$("${client_cpu[@]}" wrk -t1 -c"$connections" -d"${seconds}s" "http://127.0.0.1:$1/c/hello" |
    awk '/Requests\/sec/ { print $2 }')
  : >"$log"
  echo "$r"
}
# The machine is shared and noisy: measure the five servers in alternating rounds (the order
# reverses every round) and report the median of the per-round ratios, which drift affects least.
for port in 18181 18183 18182 18184 18185; do
  wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$port/c/hello" >/dev/null
done
: >"$log"
results=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    h=$(rps 18181); m=$(rps 18185); k=$(rps 18184); l=$(rps 18183); b=$(rps 18182)
  else
    b=$(rps 18182); l=$(rps 18183); k=$(rps 18184); m=$(rps 18185); h=$(rps 18181)
  fi
  echo "round $round: plugin-host $h req/s, with access log $l req/s, hyper $b req/s, behind three no-op hooks $k req/s, metrics off $m req/s"
  results+=("$h $l $b $k $m")
done
# The median of the per-round ratios of column $1 to column $2.
median() {
  printf '%s\n' "${results[@]}" | awk -v n="$1" -v d="$2" '{ printf "%.4f\n", $n / $d }' | sort -n |
    awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
}
printf '%s\n' "${results[@]}" |
  awk -v seconds="$seconds" -v connections="$connections" -v warn="$(median 1 3)" -v info="$(median 2 3)" \
  -v hooks="$(median 4 1)" -v metrics="$(median 1 5)" '
  { hs += $1; ls += $2; bs += $3; ks += $4; ms += $5 }
  END {
    printf "wrk -t1 -c%d, %d x %ds per server\n", connections, NR, seconds
    printf "plugin-host serve --log-level warn (C greeter GET /c/hello): %.0f req/s (mean)\n", hs / NR
    printf "plugin-host serve, default level (access log to a file):     %.0f req/s (mean)\n", ls / NR
    printf "minimal hyper server, same bytes:                            %.0f req/s (mean)\n", bs / NR
    printf "plugin-host serve --log-level warn, three no-op hooks first: %.0f req/s (mean)\n", ks / NR
    printf "plugin-host serve --log-level warn --metrics off:            %.0f req/s (mean)\n", ms / NR
    printf "ratio, --log-level warn: %.3f (median of %d rounds; goal >= 0.95)\n", warn, NR
    printf "ratio, default level:    %.3f (median of %d rounds; goal >= 0.90)\n", info, NR
    printf "ratio, three no-op hooks / none: %.3f (median of %d rounds; goal >= 0.95)\n", hooks, NR
    printf "ratio, metrics on / off: %.3f (median of %d rounds; goal >= 0.97)\n", metrics, NR
  }'
