"""The arithmetic of bench/compare.sh, which measures; this only reads and summarizes.

    compare.py criterion HOME    print the median time per iteration, in ns, of the one
                                 benchmark criterion wrote under HOME (its CRITERION_HOME)
    compare.py summarize FIGURES TABLE HEADING
                                 read FIGURES (`round name value` lines; round 0 is the
                                 warm-up and is left out), print and write to TABLE the
                                 markdown table of the README's performance section, under
                                 HEADING

Per comparison of A and B, the table gives the median of each side over the rounds and the
median of the per-round ratios B/A (or differences B - A) with their range: each round
measures A and B within seconds of each other, so that a ratio carries little of the drift
of a shared machine, and the median of the ratios is robust to a round that met other load.
"""

import glob
import json
import statistics
import sys
from collections import defaultdict

# What a row compares, A and B (names of figures compare.sh records), how (B / A, or B - A),
# the goal as the README states it, and the test of the goal on (A, B, figure), all medians.
ROWS = [
    (
        "`Router::dispatch` to a no-op handler in a loaded library (B) vs the same lookup "
        "plus a plain Rust call (A), criterion",
        "dispatch_baseline", "dispatch_abi", "ratio", "≤ 1.25×", lambda a, b, r: r <= 1.25,
    ),
    (
        "the same with one no-op in-process `on_request` hook in front (B) vs without (A)",
        "dispatch_abi", "dispatch_hook", "difference", "< 10 ns more", lambda a, b, d: d < 10,
    ),
    (
        "requests/s of `plugin-host serve --log-level warn` (C `GET /c/hello`) (B) vs a "
        "minimal hyper server (A), under wrk",
        "http_hyper", "http_warn", "ratio", "≥ 0.95", lambda a, b, r: r >= 0.95,
    ),
    (
        "the same at the default log level (access log on, to a file) (B) vs hyper (A)",
        "http_hyper", "http_log", "ratio", "≥ 0.90", lambda a, b, r: r >= 0.90,
    ),
    (
        "`serve --log-level warn` with three no-op hook plugins in front (B) vs none (A)",
        "http_warn", "http_hooks", "ratio", "≥ 0.95", lambda a, b, r: r >= 0.95,
    ),
    (
        "`serve --log-level warn` with metrics (B) vs `--metrics off` (A)",
        "http_metrics_off", "http_warn", "ratio", "≥ 0.97", lambda a, b, r: r >= 0.97,
    ),
    (
        "the C greeter isolated (B) vs in-process (A), both at `warn`, under wrk",
        "http_warn", "http_isolated", "ratio", "≥ 0.8", lambda a, b, r: r >= 0.8,
    ),
    (
        "`Router::dispatch` of `GET /ping` to an isolated plugin (B) vs a raw 64-byte "
        "ping-pong over a Unix socket between two processes (A), criterion",
        "rt_raw", "rt_isolated", "ratio", "≤ 2×", lambda a, b, r: r <= 2,
    ),
    (
        "hashicorp go-plugin 64-byte net/rpc echo, p50 (B) vs the isolated `Router::dispatch` "
        "above (A)",
        "rt_isolated", "goplugin_p50", "ratio", "≥ 5×", lambda a, b, r: r >= 5,
    ),
    (
        "go-plugin start-up, `NewClient` to a dispensed plugin (B) vs creating and starting an "
        "isolated plugin: spawn, handshake, `start` (A)",
        "start_isolated", "goplugin_start", "ratio", "A ≤ 10 ms", lambda a, b, r: a <= 10e6,
    ),
]

# The unit of each figure: requests/s for wrk's, ns for the rest.
RATES = {"http_hyper", "http_warn", "http_log", "http_hooks", "http_metrics_off", "http_isolated"}


def criterion(home):
    found = glob.glob(f"{glob.escape(home)}/*/*/new/estimates.json")
    if len(found) != 1:
        sys.exit(f"expected one criterion estimate under {home}, found {len(found)}: {found}")
    with open(found[0]) as estimates:
        print(json.load(estimates)["median"]["point_estimate"])


def show(name, value):
    if name in RATES:
        return f"{value:,.0f} req/s"
    for scale, unit in ((1e6, "ms"), (1e3, "µs")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} ns"


def summarize(figures, table, heading):
    rounds = defaultdict(dict)
    with open(figures) as lines:
        for line in lines:
            number, name, value = line.split()
            if number != "0":
                rounds[int(number)][name] = float(value)
    out = [
        heading,
        "",
        "| what | A | B | B/A or B − A: median (range) | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for what, a, b, how, goal, met in ROWS:
        pairs = [(r[a], r[b]) for r in rounds.values() if a in r and b in r]
        if not pairs:
            out.append(f"| {what} | – | – | not measured | {goal} | – |")
            continue
        if how == "ratio":
            each = [y / x for x, y in pairs]
            shown = [f"{v:.3f}" for v in (statistics.median(each), min(each), max(each))]
        else:
            each = [y - x for x, y in pairs]
            shown = [f"{v:+.1f} ns" for v in (statistics.median(each), min(each), max(each))]
        median_a = statistics.median(x for x, _ in pairs)
        median_b = statistics.median(y for _, y in pairs)
        ok = met(median_a, median_b, statistics.median(each))
        out.append(
            f"| {what} | {show(a, median_a)} | {show(b, median_b)} | "
            f"{shown[0]} ({shown[1]} to {shown[2]}, {len(each)} rounds) | {goal} | "
            f"{'yes' if ok else 'no'} |"
        )
    p99 = [r["goplugin_p99"] for r in rounds.values() if "goplugin_p99" in r]
    if p99:
        out += ["", f"go-plugin echo p99: {show('goplugin_p99', statistics.median(p99))} (median of the rounds)."]
    text = "\n".join(out) + "\n"
    with open(table, "w") as file:
        file.write(text)
    print(text, end="")


if __name__ == "__main__":
    if sys.argv[1:2] == ["criterion"] and len(sys.argv) == 3:
        criterion(sys.argv[2])
    elif sys.argv[1:2] == ["summarize"] and len(sys.argv) == 5:
        summarize(*sys.argv[2:])
    else:
        sys.exit(__doc__)
