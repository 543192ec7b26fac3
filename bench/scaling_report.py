"""bench/scaling.py's output: the JSON (points, settings, load, note) and a PNG of the four cost curves.

    python bench/scaling.py --quick --out runs/bench/scaling-quick.json   # writes that JSON and scaling-quick.png beside it
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from scaling_data import COST, NOISE_STD, SIZES


def _by_stage(results: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    return [r for r in results if r["stage"] == stage]


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """Four panels: mining time per stage, search time by index kind, training samples/s, teacher texts/s; peak
    memory on the right axis of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    mine, search = _by_stage(results, "mine"), _by_stage(results, "search")
    train, teacher = _by_stage(results, "train"), _by_stage(results, "teacher")

    def memory(ax: Any, xs: list[float], rows: list[dict[str, Any]]) -> None:
        twin = ax.twinx()
        twin.plot(xs, [r["peak_rss_mib"] / 1024 for r in rows], "k:", marker=".", label="peak RSS")
        twin.set_ylim(bottom=0, top=max(r["peak_rss_mib"] for r in rows) / 1024 * 1.15)
        twin.set_ylabel("peak RSS (GiB, dotted)")

    ax = axes[0][0]
    if mine:
        xs = [r["passages"] for r in mine]
        for part in ("encode", "index", "search", "select"):
            ax.plot(xs, [r["stage_seconds"].get(part, 0) for r in mine], marker="o", label=part)
        ax.plot(xs, [r["seconds"] for r in mine], "k-", marker="s", label="total")
        ax.set(xscale="log", yscale="log", xlabel="passages (queries = passages / 4)", ylabel="seconds",
               title="mining (cold cache)")
        ax.legend(fontsize=8)
        memory(ax, xs, mine)
    ax = axes[0][1]
    for kind in ("flat", "ivf", "hnsw"):
        rows = [r for r in search if r["kind"] == kind]
        if rows:
            xs = [r["vectors"] for r in rows]
            ax.plot(xs, [r["build_seconds"] for r in rows], "--", marker="o", label=f"{kind} build")
            ax.plot(xs, [r["search_seconds"] for r in rows], "-", marker="o", label=f"{kind} search")
            for r in rows:
                if "recall_at_50" in r:
                    ax.annotate(f"R@50 {r['recall_at_50']:.2f}", (r["vectors"], r["search_seconds"]), fontsize=7)
    if search:
        ax.set(xscale="log", yscale="log", xlabel="vectors", ylabel="seconds",
               title=f"search alone ({search[0]['queries']} queries, top {search[0]['k']})")
        ax.legend(fontsize=8)
    ax = axes[1][0]
    plain, cached = [r for r in train if not r["mini"]], [r for r in train if r["mini"]]
    if plain:
        ax.plot([r["batch"] for r in plain], [r["samples_per_s"] for r in plain], marker="o", label="plain: batch")
        memory(ax, [r["batch"] for r in plain], plain)
    if cached:
        ax.plot([r["mini"] for r in cached], [r["samples_per_s"] for r in cached], marker="s",
                label=f"GradCache @ {cached[0]['batch']}: mini-batch")
    if train:
        ax.set(xscale="log", xlabel="batch size / mini-batch size", ylabel="samples/s",
               title=f"training step (float32, passages {train[0]['max_length']} tokens)")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    if teacher:
        xs = [r["texts"] for r in teacher]
        ax.plot(xs, [r["texts_per_s"] for r in teacher], marker="o", label="texts/s")
        ax.set(xscale="log", xlabel="texts", ylabel="texts/s", title="teacher cache fill (MPNet, cold)")
        memory(ax, xs, teacher)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(results: list[dict[str, Any]], args: argparse.Namespace, load_before: tuple[float, ...],
                  wall_minutes: float, expected_minutes: float) -> None:
    """The JSON (atomically) and the PNG beside it."""
    load_after = os.getloadavg()
    # The load after is the run's own (it keeps the cores busy): only the load before can say another job ran.
    busy = load_before[0] > 0.5 * args.threads
    out: dict[str, Any] = {
        "mode": args.mode,
        **{stage: [{k: v for k, v in r.items() if k != "stage"} for r in _by_stage(results, stage)]
           for stage in ("mine", "search", "train", "teacher")},
        "settings": {"sizes": SIZES[args.mode], "threads": args.threads, "search_noise_std": NOISE_STD,
                     "cost_model_for_estimate": COST},
        "expected_minutes": round(expected_minutes, 1), "wall_minutes": round(wall_minutes, 1),
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "command": "python bench/scaling.py " + " ".join(sys.argv[1:]),
        "note": (("MACHINE BUSY (load average above half the cores): times are not final. " if busy else "")
                 + "Each point is a fresh subprocess, one after another; peak_rss_mib is that process's peak RSS, "
                 "rss_before_mib its RSS right before the timed part. Mining: default settings, cold cache, "
                 "one query per 4 passages. Search vectors beyond the real embeddings are noisy copies of real "
                 "ones (see search[].vectors_made)."),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".tmp-{args.out.name}")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(args.out)
    png = plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {png} ({wall_minutes:.1f} min, expected {expected_minutes:.1f}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after)")
