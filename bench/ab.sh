#!/usr/bin/env bash
# Requests per second of two `plugin-host` binaries (say, the last commit's and this one's) on
# the same configuration and route, under wrk, in interleaved rounds (A then B, then B then A,
# ...), so that a change's cost is a ratio measured in one run. Prints each round's figures and
# its ratio B / A, then the median ratio and its range.
#
# Usage: bench/ab.sh A B CONFIG [path, default /c/hello] [rounds, default 8] [seconds, default 5]
# Build a baseline with, for example:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release -p pluglet-host --bin plugin-host)
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,9p' "$0"; exit 2; }
a=$1 b=$2 config=$3 path=${4:-/c/hello} rounds=${5:-8} seconds=${6:-5}
connections=64
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
need_wrk
# The servers share core 0 and wrk runs alone on core 1 (see lib.sh).
start_server "$a" serve --config "$config" --listen 127.0.0.1:18171 --log-level warn 2>/dev/null
start_server "$b" serve --config "$config" --listen 127.0.0.1:18172 --log-level warn 2>/dev/null
for port in 18171 18172; do wait_for "$port" "$path"; done
ratios=()
for round in $(seq "$rounds"); do
  if ((round % 2)); then ra=$(rps 18171 "$path"); rb=$(rps 18172 "$path"); else rb=$(rps 18172 "$path"); ra=$(rps 18171 "$path"); fi
  ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.3f", b / a }')
  ratios+=("$ratio")
  echo "round $round: A $ra req/s, B $rb req/s, B/A $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "B/A: median %.3f, range %s to %s (%d rounds of '"$seconds"' s)\n", m, r[1], r[NR], NR }'
