"""Resume states and exported checkpoints of a run: each step saved once, atomically; read back with checks.

    ls runs/<name>/state/step-000100/    # model.safetensors optimizer.bin random_states_*.pkl trainer_state.json

A state folder holds ``accelerator.save_state`` (model, optimizer, one RNG file per process) and what we own, as
JSON: ``trainer_state.json`` (data position, trained config and its hash, total steps, number of processes, lr
schedule, size of every file) and, with re-mining, ``remined.json`` (the negatives in use). Accelerate's optimizer
and RNG files are pickles that its ``load_state`` unpickles: a state folder is trusted code, resume only states
you wrote. On resume the newest state is checked first (its JSON parses, every file has the size it was written
with, the safetensors are complete); one that fails is skipped, saying so, for the one before it.
"""
from __future__ import annotations

import json
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from trainer.run import RunDir, check_resume_config, config_hash, resumable_runs, step_name, trained_config

STATE_FILE = "trainer_state.json"
REMINED_FILE = "remined.json"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` already consumed
    samples: int = 0  # queries seen, all processes together


class StateError(ValueError):
    """A state folder that cannot be resumed (incomplete, corrupted, or from another setup)."""


def _check_safetensors(path: Path) -> None:
    """The file holds its whole header and every tensor's bytes (a truncated copy does not)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise StateError(f"{path}: truncated ({size} bytes)")
        (length,) = struct.unpack("<Q", head)
        try:
            header = json.loads(handle.read(length))
        except ValueError as err:
            raise StateError(f"{path}: unreadable header ({err})") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size < 8 + length + end:
        raise StateError(f"{path}: truncated ({size} bytes of {8 + length + end})")


def read_state(path: Path) -> dict[str, Any]:
    """``trainer_state.json`` of a state folder, after checking the folder is complete."""
    try:
        saved = json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        raise StateError(f"{path}: not a complete state folder (no {STATE_FILE})") from None
    except ValueError as err:
        raise StateError(f"{path / STATE_FILE}: unreadable ({err})") from None
    for name, size in saved.get("files", {}).items():
        file = path / name
        if not file.exists() or file.stat().st_size != size:
            found = file.stat().st_size if file.exists() else "missing"
            raise StateError(f"{file}: {found} bytes, written with {size}")
    for file in path.rglob("*.safetensors"):
        _check_safetensors(file)
    if (path / REMINED_FILE).exists():
        try:
            json.loads((path / REMINED_FILE).read_text())
        except ValueError as err:
            raise StateError(f"{path / REMINED_FILE}: unreadable ({err})") from None
    return saved


def pick_state(candidates: list[Path], log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """The newest usable state of ``candidates`` (newest first); each unusable one is named in a warning."""
    errors = []
    for path in candidates:
        try:
            saved = read_state(path)
        except StateError as err:
            errors.append(str(err))
            log(f"warning: cannot resume {path.name}: {err}; trying the state before it")
            continue
        if errors:
            log(f"warning: resuming from {path} instead of the newest state, which is unusable")
        return path, saved
    raise StateError("no usable state to resume: " + "; ".join(errors))


def resolve_resume(cfg: DictConfig, run: RunDir, world_size: int,
                   log: Callable[[str], None] = print) -> Optional[tuple[Path, dict[str, Any]]]:
    """The state to resume and its ``trainer_state.json``, checked against this config and setup; None = fresh."""
    states = [p for p in reversed(run.step_dirs(run.states)) if (p / STATE_FILE).exists()]
    if cfg.resume is None:
        if states:
            raise FileExistsError(f"{run.root} already holds training state ({states[0].name}); "
                                  "continue it with resume=auto, or pick another name=...")
        return None
    if cfg.resume == "auto":
        if default_name(cfg):
            raise ValueError(unnamed_resume_message(cfg, run))
        if not states:
            return None  # nothing to resume: start fresh
        path, saved = pick_state(states, log)
    else:
        path = Path(cfg.resume)
        if not (path / STATE_FILE).exists():
            raise FileNotFoundError(f"resume={path}: not a complete state folder (no {STATE_FILE})")
        path, saved = pick_state([path], log)
    check_resume_config(path, cfg, saved)
    saved_world = saved.get("world_size")
    if saved_world is not None and saved_world != world_size:
        raise StateError(f"cannot resume {path}: it was saved by {saved_world} processes and this run has "
                         f"{world_size}. The data position counts global batches of train.batch_size x processes "
                         f"and every process has its own random state: resume with {saved_world} processes, or "
                         "start a new run (name=...) from its checkpoint.")
    return path, saved


def default_name(cfg: DictConfig) -> bool:
    """``name`` is still conf/train.yaml's default, a timestamp: each start gets a new run dir."""
    if "name" not in cfg or not OmegaConf.is_interpolation(cfg, "name"):
        return False
    raw = OmegaConf.to_container(cfg, resolve=False).get("name")
    return isinstance(raw, str) and raw.startswith("${now:")


def unnamed_resume_message(cfg: DictConfig, run: RunDir) -> str:
    """Why ``resume=auto`` without ``name=`` is refused, and the runs it could have meant."""
    runs = Path(cfg.paths.runs) if cfg.get("paths") and cfg.paths.get("runs") else run.root.parent
    found = resumable_runs(runs)
    listed = ("; runs under " + str(runs) + " that can be resumed: "
              + ", ".join(f"{name} (last state {state})" for name, state in found)
              if found else f"; no run under {runs} can be resumed (none holds a state without DONE.json)")
    return (f"resume=auto needs name=<run>: without it this start gets a new timestamped run dir "
            f"({run.root.name}) with nothing to resume{listed}. Continue one with name=<run> resume=auto.")


class Checkpointer:
    """Writes the resume state and the exported checkpoint of a step (once per step) and reads a state back.

    Args:
        extra_state: returns JSON-able state of parts outside the model (the re-miner's negatives), or None.
        on_saved: called on rank 0 with the new checkpoint folder (evaluation on save).
    """

    def __init__(self, cfg: DictConfig, run: RunDir, accelerator: Any, scheduler: Any, encoder: Any,
                 total_steps: int, extra_state: Callable[[], Optional[dict[str, Any]]] = lambda: None,
                 on_saved: Optional[Callable[[Path], None]] = None) -> None:
        self.cfg, self.run, self.accelerator = cfg, run, accelerator
        self.scheduler, self.encoder, self.total_steps = scheduler, encoder, total_steps
        self.extra_state, self.on_saved = extra_state, on_saved
        self.saved_step: Optional[int] = None  # the step whose state exists already (saved or resumed)
        self.exported_step: Optional[int] = None  # the step whose checkpoint this process wrote last
        self.best: Optional[Path] = None  # train.keep_best: the checkpoint rotation never removes

    def _state_json(self, state: TrainState, folder: Path) -> dict[str, Any]:
        return {"state": asdict(state), "config_hash": config_hash(self.cfg),
                "trained_config": trained_config(self.cfg), "total_steps": self.total_steps,
                "world_size": self.accelerator.num_processes,
                "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
                "files": {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
                          if p.is_file()}}

    def save(self, state: TrainState, final: bool = False) -> None:
        """Save ``state.step`` unless it is saved already (a periodic save at the step training stops at)."""
        if self.saved_step == state.step:
            return
        run, accelerator, main = self.run, self.accelerator, self.accelerator.is_main_process
        name = step_name(state.step)
        tmp = run.states / f".tmp-{name}"
        extra = self.extra_state()
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # every process writes its RNG state; rank 0 the rest
        accelerator.wait_for_everyone()
        if main:
            if extra is not None:
                (tmp / REMINED_FILE).write_text(json.dumps(extra))
            (tmp / STATE_FILE).write_text(json.dumps(self._state_json(state, tmp), indent=2, default=str))
            target = run.states / name
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)  # the state folder exists under its final name only when complete
            run.rotate(run.states, self.cfg.train.keep_last)
            self._export(state.step, final)
            run.echo(f"step {state.step}: saved state/{name} and checkpoints/{name}" + (" (final)" if final else ""))
        self.saved_step = state.step
        accelerator.wait_for_everyone()

    def export(self, step: int) -> Path:
        """Rank 0: the checkpoint of ``step`` without a resume state (a best step between saves)."""
        if self.accelerator.is_main_process:
            self._export(step, final=False)
        return self.run.checkpoints / step_name(step)

    def _export(self, step: int, final: bool) -> None:
        from trainer.models.checkpoint import save_checkpoint

        folder = self.run.checkpoints / step_name(step)
        if self.exported_step != step or final or not folder.exists():  # a best step's checkpoint is written once
            save_checkpoint(self.encoder, folder, {"step": step, "config_hash": config_hash(self.cfg), "final": final,
                                                   "run": str(self.run.root),
                                                   "task_instructions": self.encoder.spec.prompts.instructions})
            self.exported_step = step
            if self.on_saved is not None:
                self.on_saved(folder)
        self.run.rotate(self.run.checkpoints, self.cfg.train.keep_last, spare=self.best)

    def restore(self, path: Path, saved: dict[str, Any]) -> TrainState:
        """Load model, optimizer and RNG (accelerate) and the lr schedule; returns the data position."""
        self.accelerator.load_state(str(path))
        schedule = saved.get("scheduler")
        if schedule is None:  # a state written before the schedule was stored: LambdaLR's state is its step
            step = saved["state"]["step"]
            schedule = {"last_epoch": step, "_step_count": step + 1,
                        "_last_lr": [g["lr"] for g in self.scheduler.optimizer.param_groups]}
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **schedule})
        self.saved_step = saved["state"]["step"]
        return TrainState(**saved["state"])


def remined_state(path: Path) -> Optional[dict[str, Any]]:
    """The negatives a state was saved with (``remined.json``), or None."""
    file = path / REMINED_FILE
    return json.loads(file.read_text()) if file.exists() else None
