"""Follow a run: evaluate what each complete checkpoint still needs, as it lands, until the run is done.

    python -m trainer.evaluate run_dir=runs/demo watch=true     # beside training (the way for multi-GPU runs)
    python -m trainer.evaluate run_dir=runs/demo                # every complete checkpoint now, then stop

Polls ``<run>/checkpoints/step-*`` (``RunDir.step_dirs``: complete folders only, ``.tmp-*`` is ignored) and
stops when ``<run>/DONE.json`` exists and every checkpoint is evaluated, or after ``idle_timeout_seconds``
without a new checkpoint. ``<run>/eval/state.json`` keeps each checkpoint's outcome (done, vanished, failed) and
each task's result with its ``task_fingerprint`` (task settings + data): a run evaluates exactly the tasks with
no result, a changed task or data file, or a failure that may pass on a retry (not one reading the task's data,
which recurs until the data or settings change). Each checkpoint is tried once per run, so a stopped watcher
resumes where it left off. A checkpoint deleted while it is read (rotation) is recorded as vanished; a failed task
is recorded in its JSON and the rest go on. The CLI checks task names and paths before watching and exits
non-zero when a configured task's result is a failure.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from trainer.distributed import world
from trainer.evaluation.leaderboard import WandbSink, update_run_reports
from trainer.evaluation.runner import (Log, PromptMismatch, all_scores, as_dict, checkpoint_step,
                                       evaluate_checkpoint, main_scores, suite_average, write_suite_average)
from trainer.evaluation.kinds import main_metric
from trainer.evaluation.tasks import check_task_names, check_task_paths, task_fingerprint
from trainer.models.encoder import METADATA_FILE
from trainer.run import RunDir, write_json_atomic
from trainer.runtime import setup_processes


class EvalState:
    """``<run>/eval/state.json``: ``{"checkpoints": {name: {"status": done|vanished|failed, "tasks": {task:
    {"fingerprint", "status": ok|failed, "retry", "main_score"}}, ...}}}``.

    A task result holds for its ``task_fingerprint`` (task settings + data); a checkpoint needs the configured tasks
    that have no result, a failed one that may pass on a retry, or a result for other settings or data.
    """

    def __init__(self, eval_dir: Path) -> None:
        self.path = Path(eval_dir) / "state.json"
        self.data: dict[str, Any] = {"checkpoints": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def pending(self, name: str, tasks: Sequence[Mapping[str, Any]],
                fingerprints: Mapping[str, str]) -> list[Mapping[str, Any]]:
        """The tasks ``name`` still needs (``fingerprints``: task name -> ``task_fingerprint``)."""
        done = self.data["checkpoints"].get(name, {}).get("tasks", {})

        def needed(task: Mapping[str, Any]) -> bool:
            entry = done.get(task["name"])
            return (entry is None or entry["fingerprint"] != fingerprints[task["name"]]
                    or (entry["status"] != "ok" and entry.get("retry", True)))

        return [task for task in tasks if needed(task)]

    def failures(self, names: Sequence[str], tasks: Sequence[Mapping[str, Any]],
                 fingerprints: Mapping[str, str]) -> list[str]:
        """``"<checkpoint> <task>: <error>"`` of each configured task whose current result for these checkpoints
        failed, and ``"<checkpoint>: <error>"`` of each of them that could not be loaded."""
        out = []
        for name in names:
            entry = self.data["checkpoints"].get(name, {})
            if entry.get("status") == "failed":
                out.append(f"{name}: {entry.get('error')}")
            done = entry.get("tasks", {})
            out += [f"{name} {t['name']}: {done[t['name']].get('error')}" for t in tasks
                    if done.get(t["name"], {}).get("status") == "failed"
                    and done[t["name"]]["fingerprint"] == fingerprints[t["name"]]]
        return out

    def record(self, name: str, results: Mapping[str, Mapping[str, Any]], step: Optional[int]) -> None:
        """Merge newly evaluated task results into the checkpoint's entry and mark it done."""
        tasks = dict(self.data["checkpoints"].get(name, {}).get("tasks", {}))
        for task, r in results.items():
            info = r["embedstill"]
            scores = main_scores({task: r})
            tasks[task] = {"fingerprint": info["task_fingerprint"], "status": info["status"], "error": info["error"],
                           "retry": info["retry"], "main_score": next(iter(scores.items()), None)}
        self.mark(name, "done", step=step, tasks=tasks,
                  failed_tasks=sorted(t for t, e in tasks.items() if e["status"] != "ok"),
                  scores={e["main_score"][0]: e["main_score"][1] for e in tasks.values() if e["main_score"]})

    def mark(self, name: str, status: str, **info: Any) -> None:
        self.data["checkpoints"][name] = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.data)


def _gone(checkpoint: Path) -> bool:
    """The folder was removed (or is being removed) under us."""
    return not (checkpoint / METADATA_FILE).exists() or not any(checkpoint.glob("*.safetensors"))


def fingerprints_of(tasks: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Task name -> ``task_fingerprint`` (file hashes are remembered per size and mtime, so polling is cheap)."""
    return {t["name"]: task_fingerprint(t) for t in tasks}


def evaluate_saved(run_root: str | Path, checkpoint: str | Path, tasks: Sequence[Mapping[str, Any]], *,
                   batch_size: int = 64, device: str = "auto", log: Log = print,
                   sink: Optional[WandbSink] = None, precision: str = "auto") -> Optional[dict[str, dict[str, Any]]]:
    """Evaluate the tasks one checkpoint of a run still needs (``EvalState.pending``); update the run's reports.

    Returns the results of the tasks evaluated now, or None when nothing was needed or the checkpoint vanished or
    could not be read. ``PromptMismatch`` propagates: it is a configuration error that every checkpoint would hit.
    """
    run_root, checkpoint = Path(run_root), Path(checkpoint)
    tasks = [as_dict(t) for t in tasks]
    state = EvalState(run_root / "eval")
    todo = state.pending(checkpoint.name, tasks, fingerprints_of(tasks))
    if not todo:
        return None
    try:
        results = evaluate_checkpoint(checkpoint, todo, run_root / "eval" / checkpoint.name, batch_size=batch_size,
                                      device=device, log=log, precision=precision)
    except PromptMismatch:
        raise
    except Exception as err:  # noqa: BLE001 - recorded; the watcher goes on with the next checkpoint
        status = "vanished" if _gone(checkpoint) else "failed"
        log(f"[eval] {checkpoint.name}: {status} while loading ({type(err).__name__}: {err})")
        state.mark(checkpoint.name, status, error=f"{type(err).__name__}: {err}")
        return None
    step = next(iter(results.values()))["embedstill"]["model"]["step"] if results else checkpoint_step(checkpoint, {})
    state.record(checkpoint.name, results, step)
    write_suite_average(run_root / "eval" / checkpoint.name, tasks, log)  # over every task, earlier ones included
    update_run_reports(run_root)
    if sink is not None:
        sink.log(step, all_scores(results))
    return results


class WatcherLock:
    """``<run>/eval/watcher.lock`` holds the watcher's pid; a lock whose process is gone is taken over."""

    def __init__(self, eval_dir: Path) -> None:
        self.path = Path(eval_dir) / "watcher.lock"

    def __enter__(self) -> "WatcherLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            try:
                pid = int(self.path.read_text().strip() or 0)
                os.kill(pid, 0)  # raises if no such process
                if pid != os.getpid():
                    raise RuntimeError(f"{self.path}: another evaluator (pid {pid}) is watching this run; stop it "
                                       "first, or delete the lock file if that process is gone")
            except (ValueError, ProcessLookupError):
                pass  # stale lock from a stopped watcher
        self.path.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def watch_run(run_root: str | Path, tasks: Sequence[Mapping[str, Any]], *, watch: bool = True,
              poll_seconds: float = 10.0, idle_timeout_seconds: float = 3600.0, batch_size: int = 64,
              device: str = "auto", log: Log = print, sink: Optional[WandbSink] = None,
              sleep: Callable[[float], None] = time.sleep,
              precision: str = "auto") -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate what every complete checkpoint of ``run_root`` still needs; with ``watch`` keep polling until done
    or idle. Each checkpoint is tried at most once per call (a failure is retried by the next call).

    Returns ``{checkpoint name: task results}`` for the checkpoints evaluated by this call.
    """
    run_root = Path(run_root)
    tasks = [as_dict(t) for t in tasks]
    check_task_names(tasks)
    run = RunDir(run_root)
    evaluated: dict[str, dict[str, dict[str, Any]]] = {}
    tried: set[str] = set()
    last_new = time.monotonic()
    with WatcherLock(run_root / "eval"):
        while True:
            done = (run_root / "DONE.json").exists()  # read before listing: the final checkpoint precedes it
            state, fingerprints = EvalState(run_root / "eval"), fingerprints_of(tasks)
            pending = [p for p in run.step_dirs(run.checkpoints)
                       if p.name not in tried and state.pending(p.name, tasks, fingerprints)]
            for checkpoint in pending:
                tried.add(checkpoint.name)
                results = evaluate_saved(run_root, checkpoint, tasks, batch_size=batch_size, device=device,
                                         log=log, sink=sink, precision=precision)
                if results is not None:
                    evaluated[checkpoint.name] = results
                last_new = time.monotonic()
            if pending:
                continue  # list again at once: more may have landed while we evaluated
            if not watch or done:
                break
            if time.monotonic() - last_new > idle_timeout_seconds:
                log(f"[eval] no new checkpoint in {idle_timeout_seconds:.0f}s and no {run_root / 'DONE.json'}: "
                    "stopping (run again to continue)")
                break
            sleep(poll_seconds)
    return evaluated


class TasksFailed(RuntimeError):
    """Some eval tasks failed (their results, with the errors, are written); the CLI exits non-zero."""


def run_from_config(cfg: Any, log: Log = print) -> Optional[float]:
    """``python -m trainer.evaluate``: dispatch on checkpoint= / run_dir= (watch=) / runs=; returns the main metric.

    Raises ``TasksFailed`` after writing every result when a configured task's result is a failure.
    """
    from trainer.evaluation.leaderboard import compare_runs

    if cfg.runs:
        out = Path(cfg.out_dir or Path(cfg.paths.runs) / "leaderboard")
        rows = compare_runs(list(cfg.runs), out)
        log(f"[eval] leaderboard of {len(rows)} checkpoints: {out / 'leaderboard.md'}")
        return None
    if cfg.corpus_checkpoint and not cfg.checkpoint:
        raise ValueError("corpus_checkpoint=PATH (documents by one model, queries by another) goes with "
                         "checkpoint=PATH, the query model")
    if bool(cfg.checkpoint) == bool(cfg.run_dir):
        raise ValueError("give exactly one of checkpoint=PATH or run_dir=PATH (watch=true to follow a run), "
                         "or runs=[RUN,...] for a leaderboard across runs")
    tasks = [as_dict(t) for t in cfg.eval.tasks]
    if not tasks:
        raise ValueError("no eval tasks configured: pick a task set, e.g. eval=suite or eval=news")
    check_task_names(tasks)
    check_task_paths(tasks)  # before any checkpoint is loaded or a run watched
    device, is_main = setup_processes(cfg.device)
    device = str(device)  # a torch device name: the evaluation runner and the MTEB adapter take names
    if cfg.checkpoint:
        results, failed = evaluate_one(cfg, tasks, device, is_main, log)
    else:
        results, failed = watch_from_config(cfg, tasks, log)
    if failed:
        raise TasksFailed(f"{len(failed)} eval task result(s) failed: {'; '.join(failed)} (see their JSON files)")
    scores = all_scores(results)
    if cfg.checkpoint:
        scores.update(suite_average(results))  # eval.metric=suite/average selects the MTEB-style mean
    first = tasks[0]
    metric = cfg.eval.metric or main_metric(first)
    return scores.get(metric)


def evaluate_one(cfg: Any, tasks: list[dict[str, Any]], device: str, is_main: bool,
                 log: Log) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``checkpoint=``: every task on one checkpoint; (results, failures)."""
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint={checkpoint}: not a folder")
    run_root = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    name = checkpoint.name + (f"-corpus-{Path(cfg.corpus_checkpoint).name}" if cfg.corpus_checkpoint else "")
    default = run_root / "eval" / name if run_root else checkpoint.with_name(name + "-eval")
    out = Path(cfg.out_dir) if cfg.out_dir else default
    sink = WandbSink(cfg.logger if is_main else None, run_root)
    results = evaluate_checkpoint(checkpoint, tasks, out, batch_size=cfg.eval.batch_size, device=device,
                                  allow_no_metadata=cfg.allow_no_metadata, log=log,
                                  corpus_checkpoint=cfg.corpus_checkpoint, precision=cfg.eval.precision)
    step = next(iter(results.values()))["embedstill"]["model"]["step"]
    if is_main:
        write_suite_average(out, tasks, log)
    if run_root is not None and out == default and is_main:
        EvalState(run_root / "eval").record(checkpoint.name, results, step)
        update_run_reports(run_root)
    sink.log(step, all_scores(results))
    sink.finish()
    log(f"[eval] results in {out}")
    failed = [f"{checkpoint.name} {name}: {r['embedstill']['error']}" for name, r in results.items()
              if r["embedstill"]["status"] != "ok"]
    return results, failed


def watch_from_config(cfg: Any, tasks: list[dict[str, Any]], log: Log) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``run_dir=``: what every checkpoint still needs; (results of the last checkpoint evaluated, failures)."""
    run_root = Path(cfg.run_dir)
    if world()[1] > 1:
        raise ValueError("run_dir= (the watcher) runs as one process; launch several processes only with "
                         "checkpoint= (each large task's encoding is then sharded over them)")
    if not run_root.is_dir():
        raise FileNotFoundError(f"run_dir={run_root}: not a folder")
    sink = WandbSink(cfg.logger, run_root)
    by_checkpoint = watch_run(run_root, tasks, watch=cfg.watch, poll_seconds=cfg.poll_seconds,
                              idle_timeout_seconds=cfg.idle_timeout_seconds, batch_size=cfg.eval.batch_size,
                              device=cfg.device, log=log, sink=sink, precision=cfg.eval.precision)
    sink.finish()
    log(f"[eval] evaluated {len(by_checkpoint)} checkpoints; leaderboard: {run_root / 'eval' / 'leaderboard.md'}")
    run = RunDir(run_root)
    names = [p.name for p in run.step_dirs(run.checkpoints)]
    failed = EvalState(run_root / "eval").failures(names, tasks, fingerprints_of(tasks))
    return (by_checkpoint[list(by_checkpoint)[-1]] if by_checkpoint else {}), failed
