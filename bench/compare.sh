#!/usr/bin/env bash
# Every comparison of the README's performance table, in one run, interleaved: each round
# measures every figure once, for a few seconds, in an order that reverses from one round to
# the next (A, B, ..., then ..., B, A), so that the two sides of a comparison are measured
# seconds apart and a drift of the machine falls on both. Round 0 warms up (caches, CPU frequency, the
# servers' first connections) and is left out. Per comparison, it prints the medians of each
# side and the median of the per-round ratios with their range (bench/compare.py), and writes
# that table to a file, the one the README's performance section shows.
#
# The figures:
# - in-process dispatch (`cargo bench --bench dispatch`: `abi`, `hook`, `baseline`), one
#   criterion run per case and round, pinned to the load generator's core when there are two;
# - requests/s under wrk of the servers of bench/http.sh (hyper, `plugin-host serve` at
#   `warn`, with the access log, behind three no-op hooks, `--metrics off`) and of the greeter
#   isolated (bench/isolation.sh's case); the servers on core 0, wrk on core 1 (bench/lib.sh);
# - the isolated round trip (`cargo bench --bench isolation`: `Router::dispatch` to an isolated
#   `hello`, and a raw 64-byte Unix-socket ping-pong), against hashicorp go-plugin's 64-byte
#   net/rpc echo (bench/goplugin, built from Debian's golang-github-hashicorp-go-plugin-dev,
#   installed here if missing), p50 and p99 of single calls: the caller on core 0, the process
#   it calls on core 1 (across_cores, below); and the start-up of both, on core 0.
# Criterion's figure is its median time per iteration (the median of its samples' means).
#
# On a shared machine, more rounds hold better than longer ones: other load comes in bursts of
# seconds, and a median over many rounds leaves the rounds it hit aside.
#
# Usage: bench/compare.sh [rounds, default 8] [seconds per figure, default 2]
#                         [table, default $CARGO_TARGET_DIR/bench-results.md]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
rounds=${1:-8}
seconds=${2:-2}
table=${3:-$target/bench-results.md}
connections=64
need_wrk

# go-plugin and what it imports (Debian's package does not depend on its gRPC imports).
gocode=/usr/share/gocode/src
if ! command -v go >/dev/null || [ ! -d "$gocode/github.com/hashicorp/go-plugin" ] ||
  [ ! -d "$gocode/google.golang.org/grpc" ] || [ ! -d "$gocode/golang.org/x/net/context" ]; then
  apt-get update
  apt-get install -y --no-install-recommends golang-go golang-github-hashicorp-go-plugin-dev \
    golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-golang-x-net-dev
fi
GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS='' GOPROXY=off \
  go build -o "$target/goplugin-echo" ./bench/goplugin

greeter_configs target/bench-samples
# The criterion benchmarks, built once and then run directly, one case at a time.
declare -A bench
while read -r name exe; do bench[$name]=$exe; done < <(
  cargo bench -q -p pluglet-host --bench dispatch --bench isolation --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
if [ -z "${bench[dispatch]:-}" ] || [ -z "${bench[isolation]:-}" ]; then
  echo "cargo built no dispatch or isolation benchmark"
  exit 1
fi

start_http_servers
port_isolated=18186
start_server "$target/release/plugin-host" serve --config "$isolated" --listen "127.0.0.1:$port_isolated" \
  --log-level warn
wait_for "$port_isolated" /c/hello "hello from C"

work=$(mktemp -d)
remove_on_exit+=("$work")
figures="$work/figures"

# record ROUND NAME VALUE
record() {
  [ -n "$3" ] || { echo "round $1: no figure for $2"; exit 1; }
  echo "$1 $2 $3" >>"$figures"
  printf 'round %s: %-18s %s\n' "$1" "$2" "$3"
}
# criterion EXE ID [PREFIX...]: criterion's median time per iteration, in ns, of the benchmark
# of EXE whose id starts with ID, measured for $seconds after 1 s of warm-up, run under PREFIX.
criterion() {
  local exe=$1 id=$2 home
  shift 2
  home=$(mktemp -d -p "$work")
  export CRITERION_HOME=$home # this runs in a subshell: $(criterion ...)
  if ! "$@" "$exe" --bench --warm-up-time 1 --measurement-time "$seconds" --noplot "^$id" \
    >"$work/criterion.log" 2>&1 || ! python3 bench/compare.py criterion "$home"; then
    cat "$work/criterion.log" >&2
    return 1
  fi
}
# descendants PID: the processes below PID, at any depth (an isolated worker runs two levels
# below its host, in a PID namespace of its own).
descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}
# across_cores COMMAND...: runs COMMAND on the servers' core and, for its first 1-2 s, moves
# the processes it starts (all their threads) to the load generator's core, so that every round
# trip crosses cores, as it does in a server under load, rather than sometimes not, as the
# scheduler pleases: a wake-up on the same core costs a fraction of one across. Both
# benchmarks warm up for 1 s, after the processes started. Without two cores, just runs it.
across_cores() {
  if ((${#server_cpu[@]} == 0)); then
    "$@"
    return
  fi
  "${server_cpu[@]}" "$@" &
  local pid=$! child until=$((SECONDS + 2))
  while ((SECONDS < until)) && kill -0 "$pid" 2>/dev/null; do
    for child in $(descendants "$pid"); do
      taskset -a -p -c "${client_cpu[2]}" "$child" >/dev/null 2>&1 || true
    done
    sleep 0.02
  done
  wait "$pid"
}
# measure ROUND STEP: measures the figure(s) of STEP and records them.
measure() {
  local round=$1 step=$2 value line p50 p99
  case $step in
    dispatch_abi) value=$(criterion "${bench[dispatch]}" 'dispatch GET /ping/abi:' "${client_cpu[@]}") ;;
    dispatch_hook) value=$(criterion "${bench[dispatch]}" 'dispatch GET /ping/hook:' "${client_cpu[@]}") ;;
    dispatch_baseline) value=$(criterion "${bench[dispatch]}" 'dispatch GET /ping/baseline:' "${client_cpu[@]}") ;;
    rt_isolated) value=$(criterion "${bench[isolation]}" 'round trip/isolated:' across_cores) ;;
    rt_raw) value=$(criterion "${bench[isolation]}" 'round trip/baseline:' across_cores) ;;
    start_isolated) value=$(criterion "${bench[isolation]}" 'spawn to ready/' "${server_cpu[@]}") ;;
    http_hyper) value=$(greeter_rps "$port_hyper") ;;
    http_warn) value=$(greeter_rps "$port_warn") ;;
    http_log) value=$(greeter_rps "$port_log") ;;
    http_hooks) value=$(greeter_rps "$port_hooks") ;;
    http_metrics_off) value=$(greeter_rps "$port_metrics_off") ;;
    http_isolated) value=$(greeter_rps "$port_isolated") ;;
    goplugin_p50)
      line=$(across_cores "$target/goplugin-echo" -starts 0 -seconds "$seconds" -warmup 1)
      read -r p50 p99 < <(awk -v RS=' ' -F= '{ v[$1] = $2 }
        END { printf "%.0f %.0f\n", v["p50_us"] * 1e3, v["p99_us"] * 1e3 }' <<<"$line")
      record "$round" goplugin_p99 "$p99"
      value=$p50 ;;
    goplugin_start)
      line=$("${server_cpu[@]}" "$target/goplugin-echo" -starts 20 -seconds 0)
      value=$(awk -F= '{ printf "%.0f\n", $2 * 1e6 }' <<<"$line") ;;
  esac
  record "$round" "$step" "$value"
}

steps=(dispatch_baseline dispatch_abi dispatch_hook
  http_hyper http_warn http_log http_hooks http_metrics_off http_isolated
  rt_raw rt_isolated goplugin_p50 start_isolated goplugin_start)
reversed=()
for step in "${steps[@]}"; do reversed=("$step" "${reversed[@]}"); done
for round in $(seq 0 "$rounds"); do
  if ((round % 2)); then order=("${steps[@]}"); else order=("${reversed[@]}"); fi
  for step in "${order[@]}"; do measure "$round" "$step"; done
done

heading="\`bench/compare.sh $rounds $seconds\` at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes'), \
$(date -u +%Y-%m-%d), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg):"
echo
python3 bench/compare.py summarize "$figures" "$table" "$heading"
echo "written to $table"
