#!/usr/bin/env bash
# Zero dropped requests across reloads: `plugin-host serve` answers GET /version from a C plugin
# (tests/fixtures/version.c, built twice: 8192 bytes of `a`, or of `b`) while client threads
# send requests for the whole run, and the plugin's file is written over in place with the
# other build, then SIGHUP, `reloads` times. Each reload must be reported as `replaced version`
# before the next. Prints the requests sent, those that failed (no answer), non-2xx answers, and
# the bodies from the old/new builds and any other (torn) body; exits non-zero if any failed, was
# not 2xx or was torn, or if a reload failed.
#
# Usage: bench/reload.sh [reloads, default 20] [client threads, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
reloads=${1:-20}
clients=${2:-8}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p pluglet-host --bin plugin-host
host="$target/release/plugin-host"

dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
for mark in a b; do
  cc -std=c11 -Wall -Wextra -Wpedantic -Werror -shared -fPIC -Iinclude "-DVERSION_MARK='$mark'" \
    tests/fixtures/version.c -o "$dir/$mark.so"
done
cp "$dir/a.so" "$dir/libversion.so"
printf '[[plugin]]\npath = "libversion.so"\n' >"$dir/plugins.toml"
port=18191
env -u RUST_LOG "$host" serve --config "$dir/plugins.toml" --listen "127.0.0.1:$port" \
  >/dev/null 2>"$dir/host.log" &
pids+=($!)
server=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/version" >/dev/null && break
  sleep 0.1
done

# The clients: one connection per request (each request may meet a different router), until
# the file `stop` appears; then the figures, as `name value` lines.
python3 - "$port" "$clients" "$dir/stop" >"$dir/figures" <<'PY' &
import http.client, os, sys, threading
port, clients, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
counts = {"requests": 0, "failed": 0, "non_2xx": 0, "a": 0, "b": 0, "other": 0}
lock = threading.Lock()
def client():
    mine = dict.fromkeys(counts, 0)
    while not os.path.exists(stop):
        mine["requests"] += 1
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/version")
            response = connection.getresponse()
            body = response.read()
            connection.close()
        except Exception:
            mine["failed"] += 1
            continue
        if not 200 <= response.status < 300:
            mine["non_2xx"] += 1
        elif len(body) == 8192 and body == body[:1] * 8192 and body[:1] in (b"a", b"b"):
            mine[body[:1].decode()] += 1
        else:
            mine["other"] += 1
    with lock:
        for key in counts:
            counts[key] += mine[key]
threads = [threading.Thread(target=client) for _ in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
for key, value in counts.items():
    print(key, value)
PY
load=$!
pids+=("$load")

sleep 1
# The outcome lines only: ` reload: ... started=N`, or ` reload failed: ...` (the WARN lines of a
# drain past --grace also say `reload: `).
outcomes() { grep -E ' reload: .* started=| reload failed: ' "$dir/host.log" || true; }
reported() { outcomes | wc -l; }
started=$(date +%s.%N)
for i in $(seq "$reloads"); do
  if [ $((i % 2)) = 1 ]; then build=b; else build=a; fi
  cat "$dir/$build.so" >"$dir/libversion.so" # in place: the same file, new content
  kill -HUP "$server"
  for _ in $(seq 400); do
    [ "$(reported)" -ge "$i" ] && break
    sleep 0.05
  done
  line=$(outcomes | sed -n "${i}p")
  case $line in
    *"replaced version"*) ;;
    *) echo "reload $i: ${line:-not reported within 20 s}"; touch "$dir/stop"; exit 1 ;;
  esac
  sleep 0.2
done
took=$(echo "$(date +%s.%N) - $started" | bc)
sleep 1
touch "$dir/stop"
wait "$load"
cat "$dir/figures"
echo "reloads $reloads in ${took}s"
read -r _ failed < <(grep '^failed ' "$dir/figures")
read -r _ non_2xx < <(grep '^non_2xx ' "$dir/figures")
read -r _ other < <(grep '^other ' "$dir/figures")
if [ "$failed" != 0 ] || [ "$non_2xx" != 0 ] || [ "$other" != 0 ]; then
  echo "FAIL: $failed failed, $non_2xx non-2xx, $other torn"
  exit 1
fi
echo "ok: every request answered 2xx, every body whole from one build"
