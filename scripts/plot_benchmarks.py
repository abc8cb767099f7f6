#!/usr/bin/env python3
"""Plots W1 and W3 from the JSON files the benches write.

Usage:
    pip install matplotlib
    python3 scripts/plot_benchmarks.py [RESULTS_DIR] [OUTPUT_PNG]

Defaults: target/bench-results and docs/benchmarks.png. Each bar is the
median over the rounds; the error bar spans the min-max of the rounds.
Also prints the markdown tables of every workload found.
"""
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "bench-results")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "benchmarks.png")


def load(name):
    path = os.path.join(results, name + ".json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def stats(values):
    v = [x for x in values if x is not None]
    return statistics.median(v), min(v), max(v)


def bars(ax, cases, title, ylabel, scale, label_of):
    names = cases[0]["names"]
    width = 0.8 / len(names)
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for i, name in enumerate(names):
        meds, los, his = [], [], []
        for c in cases:
            m, lo, hi = stats(c["values"][i])
            meds.append(m / scale)
            los.append((m - lo) / scale)
            his.append((hi - m) / scale)
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(cases))]
        ax.bar(xs, meds, width, yerr=[los, his], capsize=3, label=name, color=colors[i % len(colors)])
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([label_of(c) for c in cases], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def main():
    w1 = [c for c in load("w1") if c["unit"] == "completions/s"]
    w3 = load("w3")
    if not w1 and not w3:
        sys.exit(f"no results in {results}; run `cargo bench` first")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 2]})
    if w1:
        bars(axes[0], w1, "W1 posted completions (median, min-max)", "million completions/s", 1e6,
             lambda c: c["case"].split(",")[0])
        axes[0].set_yscale("log")
    if w3:
        bars(axes[1], w3, "W3 echo, closed loop (median, min-max)", "thousand round trips/s", 1e3,
             lambda c: c["case"].replace(" conns x ", " conns\n"))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
