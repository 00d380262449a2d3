# shellcheck shell=bash
# What the bench/ scripts share: the target folder, CPU pinning, servers started in the
# background and stopped on exit, wrk runs and medians. Source it from the repository root:
#   cd "$(dirname "$0")/.." && . bench/lib.sh

# The cargo target folder, absolute (cargo builds the binaries there).
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$PWD/$target" ;; esac
# The extension of a shared library on this system.
dylib=$([ "$(uname)" = Darwin ] && echo dylib || echo so)

# With two or more cores, the servers (and their workers) share core 0 and the load generator
# runs alone on core 1, so that it does not compete with the servers it measures. Prefix a
# command with "${server_cpu[@]}" or "${client_cpu[@]}"; both are empty elsewhere.
server_cpu=() client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
fi

# The processes start_server started and the files and folders to remove, both on exit.
pids=() remove_on_exit=()
stop_all() {
  if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
  if ((${#remove_on_exit[@]})); then rm -rf "${remove_on_exit[@]}"; fi
}
trap stop_all EXIT

# need_wrk: installs wrk if it is missing.
need_wrk() {
  command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
}

# start_server COMMAND...: runs COMMAND on the servers' core in the background, its standard
# output discarded (redirect the call's standard error to keep it), and stops it on exit.
start_server() {
  "${server_cpu[@]}" "$@" >/dev/null &
  pids+=($!)
}

# wait_for PORT PATH [BODY]: waits up to 5 s for http://127.0.0.1:PORT/PATH to answer 2xx (with
# BODY, if given); exits the script if it does not.
wait_for() {
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$1$2" >/dev/null && break
    sleep 0.1
  done
  if [ $# -ge 3 ]; then
    [ "$(curl -s "http://127.0.0.1:$1$2")" = "$3" ] || { echo "the server on port $1 does not answer $2 with \"$3\""; exit 1; }
  else
    curl -sf "http://127.0.0.1:$1$2" >/dev/null || { echo "the server on port $1 does not answer $2"; exit 1; }
  fi
}

# rps PORT PATH [SECONDS]: requests per second of wrk (one thread, $connections connections,
# on the load generator's core) against http://127.0.0.1:PORT/PATH for SECONDS (default
# $seconds).
rps() {
  "${client_cpu[@]}" wrk -t1 -c"${connections:?}" -d"${3:-${seconds:?}}s" "http://127.0.0.1:$1$2" |
    awk '/Requests\/sec/ { print $2 }'
}

# median: the median of the numbers on standard input, one a line.
median() {
  sort -g | awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
}

# greeter_configs DIR: builds the samples, the `noop` hook plugin, `plugin-host` and the hyper
# baseline, stages the samples into DIR, and writes there the configurations the HTTP
# benchmarks serve, setting `config` (the C greeter's GET /c/hello alone), `hooked` (the same
# behind three instances of `noop`, whose hooks do nothing) and `isolated` (the greeter run in a
# worker process). The staged sample configuration has hook plugins of its own, so it is not
# served.
greeter_configs() {
  local staged greeter noop
  cargo build --release -q -p pluglet-host --bin plugin-host --example baseline_hyper
  cargo build --release -q -p noop-plugin
  staged=$(cargo run --release -q -p sample-plugins --bin stage-samples -- "$1")
  greeter="$(cd "$1" && pwd)/$(basename "$(grep -o '"lib[^"]*greeter[^"]*"' "$staged" | tr -d '"')")"
  [ -f "$greeter" ] || { echo "stage-samples staged no C greeter in $1"; exit 1; }
  noop="$target/release/libnoop_plugin.$dylib"
  [ -f "$noop" ] || { echo "cargo built no $noop"; exit 1; }
  config="$1/greeter.toml" hooked="$1/greeter-behind-hooks.toml" isolated="$1/greeter-isolated.toml"
  printf '[[plugin]]\npath = "%s"\n' "$greeter" >"$config"
  for i in 1 2 3; do printf '[[plugin]]\npath = "%s"\nname = "noop%s"\n\n' "$noop" "$i"; done >"$hooked"
  cat "$config" >>"$hooked"
  printf '[[plugin]]\npath = "%s"\nisolation = "process"\n' "$greeter" >"$isolated"
}

# The ports of the servers start_http_servers starts, and the access log of the one that logs.
port_warn=18181 port_hyper=18182 port_log=18183 port_hooks=18184 port_metrics_off=18185
access_log=target/bench-access.log

# start_http_servers: starts, on the servers' core, `plugin-host serve` on `config` at
# `--log-level warn` (port_warn), at the default level (port_log), at `warn` with `--metrics
# off` (port_metrics_off), and on `hooked` at `warn` (port_hooks), and the minimal hyper server
# returning the same bytes (port_hyper), and waits until they answer. The default level writes
# one access line per request to $access_log, a file, so that every line is really formatted
# and written (by the log writer thread, which shares the server's core); /dev/null would hide
# the write, and a pipe would add its reader's cost to the server's core. greeter_rps empties
# it after every run to bound its size.
start_http_servers() {
  local host="$target/release/plugin-host" port
  remove_on_exit+=("$access_log")
  start_server "$host" serve --config "$config" --listen "127.0.0.1:$port_warn" --log-level warn
  start_server "$host" serve --config "$hooked" --listen "127.0.0.1:$port_hooks" --log-level warn
  start_server "$host" serve --config "$config" --listen "127.0.0.1:$port_metrics_off" --log-level warn \
    --metrics off
  : >"$access_log"
  start_server env -u RUST_LOG "$host" serve --config "$config" --listen "127.0.0.1:$port_log" 2>>"$access_log"
  start_server "$target/release/examples/baseline_hyper" "127.0.0.1:$port_hyper"
  for port in "$port_warn" "$port_log" "$port_hyper" "$port_hooks" "$port_metrics_off"; do
    wait_for "$port" /c/hello "hello from C"
  done
  # The log writer thread writes shortly after the request.
  for _ in $(seq 20); do grep -q 'plugin_host::access' "$access_log" && break; sleep 0.05; done
  grep -q 'plugin_host::access' "$access_log" ||
    { echo "plugin-host on $port_log writes no access log to $access_log"; exit 1; }
}

# greeter_rps PORT [SECONDS]: rps on PORT's /c/hello; then empties the access log.
greeter_rps() {
  rps "$1" /c/hello "${2:-$seconds}"
  : >"$access_log"
}
