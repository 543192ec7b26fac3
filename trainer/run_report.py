"""What a run says about itself: the lines ``train.log`` keeps, ``summary.md`` and ``plots/`` at the end.

    cat runs/<name>/train.log      # config summary, plan, one line per metrics record, evaluations, saves
    cat runs/<name>/summary.md     # before/after table, best step, wall time, throughput, final checkpoint
    ls runs/<name>/plots/          # loss.png lr.png eval.png (when matplotlib is installed)

Everything here is read from the run dir's own files (``metrics.jsonl``, ``eval.jsonl``), so a report written after
a resume covers the whole run, not only the last start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from trainer.io import atomic_save, atomic_write_text
from trainer.run import RunDir, read_records

# Keys of a metrics record that are not loss parts.
NOT_LOSS = ("step", "epoch", "samples", "lr", "grad_norm", "temperature", "samples_per_s")
NOT_EVAL = ("step", "eval_seconds")


@dataclass
class Outcome:
    """Where training stopped and how long it took (this start; earlier starts are in ``train.log``)."""
    step: int
    total_steps: int
    epoch: int
    samples: int
    first_step: int  # the step this start began at (0, or the resumed step)
    session_samples: int
    wall_seconds: float  # this start, setup (data, teacher targets) included
    train_seconds: float  # the step loop alone (evaluations inside it included)
    final_checkpoint: Optional[Path]
    stopped: Optional[str]  # why training ended before the schedule, or None
    metric: Optional[str]  # the main eval metric (train.keep_best's, else eval.metric's)


def config_summary(cfg: DictConfig, run: RunDir) -> str:
    """A few lines naming what this run trains, on what, and how (the whole config is ``config.yaml``)."""
    teacher = cfg.get("teacher")
    tasks = ", ".join(t.name for t in cfg.eval.tasks) or "none"
    every = cfg.eval.every_n_steps
    lines = [f"run {run.root} (config: {run.root / 'config.yaml'}; resume={cfg.resume})",
             f"model {cfg.model.name_or_path} (pooling {cfg.model.pooling}, lora {cfg.model.lora.enabled})",
             f"data {', '.join(str(f) for f in cfg.data.train_files)} ({cfg.data.num_negatives} hard negatives)",
             f"loss {cfg.loss._target_.rsplit('.', 1)[-1]} (temperature {cfg.loss.temperature}); optim lr "
             f"{cfg.optim.lr}, {cfg.optim.scheduler} schedule, warmup "
             f"{cfg.optim.warmup_steps or cfg.optim.warmup_ratio}",
             f"steps {cfg.train.max_steps or str(cfg.train.epochs) + ' epochs'}, batch {cfg.train.batch_size} per "
             f"device, seed {cfg.train.seed}, save every {cfg.train.save_every_n_steps}, keep last "
             f"{cfg.train.keep_last}, keep best {cfg.train.keep_best}, early stopping patience "
             f"{cfg.train.early_stopping_patience}",
             f"eval {tasks}" + (f" every {every} steps" if every else " before and after training")]
    if teacher is not None:
        lines.append(f"teacher {teacher._target_.rsplit('.', 1)[-1]} {teacher.get('name_or_path') or ''}".rstrip())
    return "\n".join(lines)


def progress_line(record: dict[str, Any], total_steps: int, eta_seconds: Optional[float]) -> str:
    """One metrics record as a line: step, the loss and its parts, lr, rate and the time left to the stop."""
    names = sorted((k for k, v in record.items() if k not in NOT_LOSS and isinstance(v, float)),
                   key=lambda k: k != "loss")  # the total first, then its parts
    parts = " ".join(f"{k} {record[k]:.4f}" for k in names)
    grad = f" grad_norm {record['grad_norm']:.3f}" if record.get("grad_norm") is not None else ""
    eta = f" ETA {clock(eta_seconds)}" if eta_seconds is not None else ""
    return (f"step {record['step']}/{total_steps} epoch {record['epoch']} {parts} lr {record['lr']:.3g}{grad} "
            f"{record['samples_per_s']:.1f} samples/s{eta}")


def eval_line(step: int, results: dict[str, float], seconds: float) -> str:
    scores = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    return f"step {step}: evaluated in {seconds:.1f} s: {scores}"


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def read_log(run: RunDir, name: str) -> list[dict[str, Any]]:
    path = run.root / name
    return [record for _, record in read_records(path)] if path.exists() else []


def best_eval(evals: list[dict[str, Any]], metric: Optional[str]) -> Optional[dict[str, Any]]:
    """The evaluation during training (step > 0) with the highest ``metric``; the first one on a tie."""
    scored = [r for r in evals if r.get("step", 0) > 0 and isinstance(r.get(metric), (int, float))]
    return max(scored, key=lambda r: r[metric]) if metric and scored else None


def comparison_table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = ["| metric | before | after | change |", "|---|---|---|---|"]
    for key in after:
        if key in before:
            lines.append(f"| {key} | {before[key]:.4f} | {after[key]:.4f} | {after[key] - before[key]:+.4f} |")
    return "\n".join(lines)


def summary_text(run: RunDir, outcome: Outcome) -> str:
    """``summary.md``: what the run reached, from ``eval.jsonl`` and ``outcome``."""
    evals = read_log(run, "eval.jsonl")
    scores = [{k: v for k, v in r.items() if k not in NOT_EVAL} for r in evals]
    before = next((s for r, s in zip(evals, scores) if r.get("step") == 0), {})
    after = next((s for r, s in zip(reversed(evals), reversed(scores)) if r.get("step", 0) > 0), {})
    rate = outcome.session_samples / outcome.train_seconds if outcome.train_seconds > 0 else float("nan")
    resumed = f" (this start resumed at step {outcome.first_step})" if outcome.first_step else ""
    ended = outcome.stopped or ("finished" if outcome.step >= outcome.total_steps
                                else "stopped at train.stop_after_steps")
    checkpoint = (str(outcome.final_checkpoint.relative_to(run.root)) if outcome.final_checkpoint is not None
                  and outcome.final_checkpoint.is_relative_to(run.root) else str(outcome.final_checkpoint))
    lines = [f"# {run.root.name}", "",
             f"- steps: {outcome.step} of {outcome.total_steps}; epochs completed: {outcome.epoch}; "
             f"samples: {outcome.samples}",
             f"- ended: {ended}",
             f"- wall time: {clock(outcome.wall_seconds)} ({outcome.wall_seconds:.1f} s){resumed}",
             f"- throughput: {rate:.1f} samples/s ({outcome.session_samples} samples in "
             f"{outcome.train_seconds:.1f} s of training)",
             f"- final checkpoint: {checkpoint}"]
    best = best_eval(evals, outcome.metric)
    if best is not None:
        lines.append(f"- best: step {best['step']}, {outcome.metric} {best[outcome.metric]:.4f}")
    lines += ["", "## Evaluation", ""]
    if before and after:
        lines.append(comparison_table(before, after))
    elif after or before:
        only = after or before
        lines += [f"| metric | {'after' if after else 'before'} |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in only.items() if isinstance(v, (int, float))]
    else:
        lines.append("not evaluated (eval.tasks is empty)")
    return "\n".join(lines) + "\n"


def write_summary(run: RunDir, outcome: Outcome) -> Optional[Path]:
    if not run.is_main:
        return None
    atomic_write_text(run.root / "summary.md", summary_text(run, outcome))
    return run.root / "summary.md"


def _series(records: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    out = {key: [(r["step"], float(r[key])) for r in records
                 if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                 and math.isfinite(r[key])] for key in keys}
    return {k: v for k, v in out.items() if v}


def _plot(path: Path, ylabel: str, series: dict[str, list[tuple[int, float]]]) -> bool:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    if not series:
        return False
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for name, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=name, marker="." if len(points) < 60 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
    return True


def write_plots(run: RunDir) -> Optional[list[Path]]:
    """``plots/loss.png`` (every loss part), ``plots/lr.png`` and ``plots/eval.png`` against step, each when it has
    points; None without matplotlib (an optional dependency: the numbers stay in the JSONL files)."""
    if not run.is_main:
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    metrics = [r for r in read_log(run, "metrics.jsonl") if "loss" in r]
    evals = read_log(run, "eval.jsonl")
    loss_keys = list(dict.fromkeys(k for r in metrics for k in r if k not in NOT_LOSS))
    eval_keys = list(dict.fromkeys(k for r in evals for k in r if k not in NOT_EVAL))
    folder = run.root / "plots"
    wanted = {"loss.png": ("loss", _series(metrics, loss_keys)), "lr.png": ("learning rate", _series(metrics, ["lr"])),
              "eval.png": ("score", _series(evals, eval_keys))}
    return [folder / name for name, (label, series) in wanted.items() if _plot(folder / name, label, series)]
