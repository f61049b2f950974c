#!/usr/bin/env python3
"""The regression guard's arithmetic, for benchmark/run --save and --compare.

  abtest.py save FIGURES.json FILTER OUTPUT...     figures of one run -> FIGURES.json
  abtest.py compare FIGURES.json A_OUTPUTS B_OUTPUTS
      A_OUTPUTS / B_OUTPUTS: files holding the comparison lines of the baseline's rounds and of
      the current tree's rounds, one file per round, separated by ':' (run order A B A B ...).

A "figure" is one peer comparison line of the harness (benchmark/harness/harness.hpp):
  <name>: ours X [q1–q3], peer Y [q1–q3], ratio ours/peer Z [q1–q3] (...)
For each name, each side (baseline A, current B) has one such line per round. A side's figure is
the median of its rounds' ratio medians, and its spread runs from the median of the rounds' q1 to
the median of their q3.

"Worse beyond the noise" (what --compare flags, exit status 3): the current tree's lower quartile
lies above the baseline's upper quartile, i.e. the two interquartile ranges do not overlap and the
current one is higher (a ratio is ours / peer in time, so higher is slower), and the current
median is at least MIN_CHANGE (5 %, BOXLITE_BENCH_AB_MIN_CHANGE=0.05) above the baseline's: the
ratios are printed with two decimals, so a very steady figure has an interquartile range of zero
width and would otherwise be flagged for a change of 0.01. "Better beyond the noise" is the
mirror image. Anything else is "within the noise".
"""
import json
import os
import platform
import re
import statistics
import sys
import time

LINE = re.compile(
    r"^(?P<name>.+?): ours .*?, peer .*?, ratio ours/peer (?P<m>[0-9.]+) \[(?P<q1>[0-9.]+)–(?P<q3>[0-9.]+)\]")
MIN_CHANGE = float(os.environ.get("BOXLITE_BENCH_AB_MIN_CHANGE", "0.05"))
NO_RATIO = re.compile(r"^(?P<name>.+?): no ratio: (?P<why>.*)$")


def parse(path):
    """{name: (median, q1, q3)} and {name: why} of one run's output."""
    figures, missing = {}, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = LINE.match(line)
            if m:
                figures[m["name"]] = (float(m["m"]), float(m["q1"]), float(m["q3"]))
                continue
            n = NO_RATIO.match(line)
            if n and " ratio ours/peer " not in line:
                missing[n["name"]] = n["why"]
    return figures, missing


def side_figure(rounds):
    """(median, q1, q3) of one side over its rounds."""
    return (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds),
            statistics.median(r[2] for r in rounds))


def save(dest, name_filter, outputs):
    figures = {}
    for path in outputs:
        found, _ = parse(path)
        for name, (m, q1, q3) in found.items():
            figures[name] = {"ratio": m, "q1": q1, "q3": q3}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    record = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                    "load_average_1m": load},
        "filter": name_filter,
        "figures": figures,
    }
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"=== saved {len(figures)} figure(s) to {dest}")
    return 0 if figures else 1


def compare(saved_path, a_outputs, b_outputs):
    with open(saved_path, encoding="utf-8") as f:
        saved = json.load(f)
    a_rounds, b_rounds, missing = {}, {}, {}
    for paths, into in ((a_outputs, a_rounds), (b_outputs, b_rounds)):
        for path in paths:
            found, why = parse(path)
            for name, fig in found.items():
                into.setdefault(name, []).append(fig)
            missing.update(why)
    names = sorted(set(a_rounds) | set(b_rounds) | set(saved.get("figures", {})))
    worse = 0
    print(f"=== A/B against '{saved.get('date', '?')}' ({len(a_outputs)} rounds each, run A B A B ...;"
          " ratio = ours / peer, median [q1–q3] over rounds; worse beyond the noise: current q1 > baseline q3"
          f" and current median >= {1 + MIN_CHANGE:.2f} x baseline's)")
    for name in names:
        a, b = a_rounds.get(name), b_rounds.get(name)
        if not a or not b or len(a) != len(a_outputs) or len(b) != len(b_outputs):
            why = missing.get(name, "not measured in every round")
            print(f"{name}: no verdict: baseline {len(a or [])}, current {len(b or [])} of {len(a_outputs)} rounds"
                  f" ({why})")
            continue
        am, aq1, aq3 = side_figure(a)
        bm, bq1, bq3 = side_figure(b)
        if bq1 > aq3 and bm >= am * (1 + MIN_CHANGE):
            verdict, worse = "WORSE beyond the noise", worse + 1
        elif bq3 < aq1 and bm <= am * (1 - MIN_CHANGE):
            verdict = "better beyond the noise"
        else:
            verdict = "within the noise"
        change = bm / am if am > 0 else float("nan")
        print(f"{name}: baseline {am:.2f} [{aq1:.2f}–{aq3:.2f}], current {bm:.2f} [{bq1:.2f}–{bq3:.2f}],"
              f" current/baseline {change:.2f}: {verdict}")
    if worse:
        print(f"=== {worse} figure(s) worse beyond the noise")
        return 3
    return 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "save":
        return save(argv[2], argv[3], argv[4:])
    if len(argv) == 5 and argv[1] == "compare":
        return compare(argv[2], [p for p in argv[3].split(":") if p], [p for p in argv[4].split(":") if p])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
