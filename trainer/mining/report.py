"""The mining report: counts per rule, settings, cache keys (``report.json``) and a score histogram (PNG).

    python -m trainer.mine ...     # writes <out_dir>/report.json and <out_dir>/scores.png
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from trainer.io import atomic_save, atomic_write_text


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """``json.dumps(row, ensure_ascii=False) + "\\n"`` per row, escaping each distinct text once: a mined
    passage is usually the negative of several queries, and escaping long passages is most of the writing time."""
    escaped: dict[str, str] = {}

    def text(value: str) -> str:
        out = escaped.get(value)
        if out is None:
            out = escaped[value] = json.dumps(value, ensure_ascii=False)
        return out

    for row in rows:
        fields = []
        for name, value in row.items():
            if isinstance(value, str):
                encoded = text(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                encoded = "[" + ", ".join(text(v) for v in value) + "]"
            else:
                encoded = json.dumps(value, ensure_ascii=False)
            fields.append(f"{json.dumps(name)}: {encoded}")
        yield "{" + ", ".join(fields) + "}\n"


def score_summary(values: Sequence[float]) -> dict[str, Optional[float]]:
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return {"count": 0, "mean": None, "p05": None, "p50": None, "p95": None}
    return {"count": int(arr.size), "mean": float(arr.mean()), "p05": float(np.quantile(arr, 0.05)),
            "p50": float(np.quantile(arr, 0.5)), "p95": float(np.quantile(arr, 0.95))}


def write_histogram(path: Path, panels: dict[str, tuple[Sequence[float], Sequence[float]]]) -> Path:
    """One panel per scorer (miner, teacher): positive vs selected-negative score histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (pos, neg)) in zip(axes[0], panels.items()):
        both = np.concatenate([np.asarray(pos, float), np.asarray(neg, float)])
        bins = np.linspace(both.min(), both.max(), 41) if both.size and both.min() < both.max() else 20
        ax.hist(pos, bins=bins, alpha=0.6, label=f"positives ({len(pos)})", density=True)
        ax.hist(neg, bins=bins, alpha=0.6, label=f"negatives ({len(neg)})", density=True)
        ax.set_title(f"{title} scores")
        ax.set_xlabel("score")
        ax.legend()
    fig.tight_layout()
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
    return path


def write_report(path: Path, report: dict[str, Any]) -> Path:
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")
    return path
