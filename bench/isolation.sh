#!/usr/bin/env bash
# Requests per second of `plugin-host serve` on the C greeter's `GET /c/hello`, run isolated (in a
# worker process, over the process protocol) against the same plugin in-process, with the same
# load generator (wrk) in the same run. Prints the figures and the ratio isolated / in-process
# (goal >= 0.5). Both servers log at `warn`, so that the access log does not count.
#
# Usage: bench/isolation.sh [seconds per run, default 5] [connections, default 64] [rounds, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
seconds=${1:-5}
connections=${2:-64}
rounds=${3:-4}
need_wrk
greeter_configs target/bench-isolation
# The servers and the worker share one core, the load generator has the other (see lib.sh).
start_server "$target/release/plugin-host" serve --config "$config" --listen 127.0.0.1:18191 --log-level warn
start_server "$target/release/plugin-host" serve --config "$isolated" --listen 127.0.0.1:18192 --log-level warn
for port in 18191 18192; do wait_for "$port" /c/hello "hello from C"; done
for port in 18191 18192; do rps "$port" /c/hello 2 >/dev/null; done
results=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    i=$(rps 18191 /c/hello); o=$(rps 18192 /c/hello)
  else
    o=$(rps 18192 /c/hello); i=$(rps 18191 /c/hello)
  fi
  echo "round $round: in-process $i req/s, isolated $o req/s"
  results+=("$i $o")
done
median=$(printf '%s\n' "${results[@]}" | awk '{ printf "%.4f\n", $2 / $1 }' | median)
printf '%s\n' "${results[@]}" | awk -v c="$connections" -v s="$seconds" -v median="$median" '
  { i += $1; o += $2 }
  END {
    printf "wrk -t1 -c%d, %d x %ds per server\n", c, NR, s
    printf "in-process (C greeter GET /c/hello): %.0f req/s (mean)\n", i / NR
    printf "isolated, same plugin file:          %.0f req/s (mean)\n", o / NR
    printf "ratio isolated / in-process: %.3f (median of %d rounds; goal >= 0.5)\n", median, NR
  }'
