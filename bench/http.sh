#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, against a
# minimal hyper server returning the same bytes (host/examples/baseline_hyper.rs), with the same
# load generator (wrk) in the same run. Prints the figures and three ratios:
# - with `--log-level warn` (no access log), against hyper: goal >= 0.95;
# - with the default level (`info`: one access line per request), against hyper: goal >= 0.90.
#   Its stderr goes to a file (see start_http_servers in bench/lib.sh);
# - with three no-op hook plugins in front of the route (three instances of the `noop` sample,
#   whose `on_request` and `on_response` do nothing), against none, both at `warn`: the cost of
#   the hook chain itself; goal >= 0.95;
# - with metrics (the default: `GET /metrics`, every request counted) against `--metrics off`,
#   both at `warn`: the cost of the metrics; goal >= 0.97.
#
# Usage: bench/http.sh [seconds per run, default 5] [connections, default 64] [rounds, default 6]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-6}
need_wrk
greeter_configs target/bench-samples
start_http_servers

# The machine is shared and noisy: measure the five servers in alternating rounds (the order
# reverses every round) and report the median of the per-round ratios, which drift affects least.
for port in "$port_warn" "$port_log" "$port_hyper" "$port_hooks" "$port_metrics_off"; do
  greeter_rps "$port" 2 >/dev/null
done
results=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    h=$(greeter_rps "$port_warn"); m=$(greeter_rps "$port_metrics_off"); k=$(greeter_rps "$port_hooks")
    l=$(greeter_rps "$port_log"); b=$(greeter_rps "$port_hyper")
  else
    b=$(greeter_rps "$port_hyper"); l=$(greeter_rps "$port_log"); k=$(greeter_rps "$port_hooks")
    m=$(greeter_rps "$port_metrics_off"); h=$(greeter_rps "$port_warn")
  fi
  echo "round $round: plugin-host $h req/s, with access log $l req/s, hyper $b req/s, behind three no-op hooks $k req/s, metrics off $m req/s"
  results+=("$h $l $b $k $m")
done
# The median of the per-round ratios of column $1 to column $2.
ratio() {
  printf '%s\n' "${results[@]}" | awk -v n="$1" -v d="$2" '{ printf "%.4f\n", $n / $d }' | median
}
printf '%s\n' "${results[@]}" |
  awk -v seconds="$seconds" -v connections="$connections" -v warn="$(ratio 1 3)" -v info="$(ratio 2 3)" \
  -v hooks="$(ratio 4 1)" -v metrics="$(ratio 1 5)" '
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
