"""Leaderboards (CSV + markdown) and score-vs-step plots from the per-task result JSONs; wandb when enabled.

    python -m trainer.evaluate run_dir=runs/demo                     # also writes runs/demo/eval/leaderboard.*
    python -m trainer.evaluate runs=[runs/a,runs/b] out_dir=reports  # across runs, no encoding

Reads ``<run>/eval/<checkpoint>/<task>.json`` (written by ``runner.evaluate_checkpoint``); one row per checkpoint,
one column per task holding its main score (empty when the task failed).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from trainer.evaluation.tasks import SUITE_FILE
from trainer.io import atomic_save, atomic_write_text


FIXED = ("run", "checkpoint", "step")


def collect(run_root: str | Path) -> list[dict[str, Any]]:
    """One row per evaluated checkpoint of a run: run, checkpoint, step, then ``task -> main score`` (None = failed)."""
    run_root = Path(run_root)
    eval_dir = run_root / "eval"
    rows: list[dict[str, Any]] = []
    if not eval_dir.exists():
        return rows
    for folder in sorted(p for p in eval_dir.iterdir() if (p / "model_meta.json").exists()):
        model = json.loads((folder / "model_meta.json").read_text())
        row: dict[str, Any] = {"run": run_root.name, "checkpoint": folder.name, "step": model.get("step")}
        for path in sorted(folder.glob("*.json")):
            if path.name == SUITE_FILE:  # the mean of main scores over the suite, a column of its own
                row["suite_average"] = json.loads(path.read_text()).get("suite/average")
                continue
            if path.name == "model_meta.json":
                continue
            record = json.loads(path.read_text())
            splits = [s for s in record.get("scores", {}).values() if s]
            # The file's name, not record["task_name"]: a plain file name even in results written before task
            # names were checked, so plotting never meets a "/".
            row[path.stem] = float(splits[0][0]["main_score"]) if splits else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["run"], r["step"] if r["step"] is not None else -1, r["checkpoint"]))


def task_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k for row in rows for k in row if k not in FIXED})


def write_leaderboard(rows: Sequence[dict[str, Any]], out_stem: str | Path) -> tuple[Path, Path]:
    """``<out_stem>.csv`` and ``<out_stem>.md``; tasks are columns, the best value per column in bold (markdown)."""
    out_stem = Path(out_stem)
    columns = list(FIXED) + task_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    csv_path = out_stem.with_suffix(".csv")
    atomic_write_text(csv_path, buffer.getvalue())
    best = {t: max((r[t] for r in rows if r.get(t) is not None), default=None) for t in task_columns(rows)}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(k, "")) for k in FIXED]
        for task in task_columns(rows):
            value = row.get(task)
            cell = "failed" if value is None and task in row else "" if value is None else f"{value:.4f}"
            cells.append(f"**{cell}**" if value is not None and value == best[task] and len(rows) > 1 else cell)
        lines.append("| " + " | ".join(cells) + " |")
    md_path = out_stem.with_suffix(".md")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def plot_scores(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """One PNG per task: its main score against step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in task_columns(rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in sorted({r["run"] for r in rows}):
            points = sorted((r["step"], r[task]) for r in rows
                            if r["run"] == run and r.get(task) is not None and r["step"] is not None)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=run)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{task} main score")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        path = out_dir / f"{task}.png"
        try:
            atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        finally:
            plt.close(fig)
        written.append(path)
    return written


def update_run_reports(run_root: str | Path) -> list[dict[str, Any]]:
    """Rewrite ``<run>/eval/leaderboard.{csv,md}`` and ``<run>/eval/plots/<task>.png``; returns the rows."""
    run_root = Path(run_root)
    rows = collect(run_root)
    if rows:
        write_leaderboard(rows, run_root / "eval" / "leaderboard")
        plot_scores(rows, run_root / "eval" / "plots")
    return rows


def compare_runs(runs: Sequence[str | Path], out_dir: str | Path) -> list[dict[str, Any]]:
    """Leaderboard and plots across runs into ``out_dir`` (``leaderboard.{csv,md}``, ``plots/``)."""
    rows = [row for run in runs for row in collect(run)]
    if not rows:
        raise FileNotFoundError(f"no evaluation results under {[str(Path(r) / 'eval') for r in runs]}: "
                                "evaluate the runs first (python -m trainer.evaluate run_dir=...)")
    write_leaderboard(rows, Path(out_dir) / "leaderboard")
    plot_scores(rows, Path(out_dir) / "plots")
    return rows


class WandbSink:
    """Logs each checkpoint's scores to a wandb run ``<run>-eval`` when ``logger.kind=wandb`` (else does nothing)."""

    def __init__(self, cfg: Any, run_root: Optional[Path]) -> None:
        self.run = None
        if cfg is not None and cfg.kind == "wandb" and cfg.mode != "disabled":
            from trainer.optional import require

            wandb = require("wandb", "logger=wandb", "wandb")  # an optional dependency
            root = Path(run_root) if run_root is not None else Path(".")
            (root / "eval").mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=cfg.project, mode=cfg.mode, dir=str(root / "eval"),
                                  name=f"{root.resolve().name}-eval", job_type="eval", tags=list(cfg.tags))

    def log(self, step: Optional[int], scores: dict[str, float]) -> None:
        if self.run is not None and scores:
            self.run.log({f"eval/{k}": v for k, v in scores.items()}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
