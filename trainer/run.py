"""The run directory: resolved config, provenance, metrics, resume states and exported checkpoints.

    ls runs/<name>/   # config.yaml run_info.json train.log metrics.jsonl eval.jsonl state/ checkpoints/ summary.md
                      # plots/ DONE.json run.lock

Only rank 0 writes here, holding ``run.lock`` (``trainer.runlock``); every write of a folder goes through a
temporary name and a rename, so a folder that exists under its final name is complete. A fresh start clears
what an earlier attempt that never saved a state left (logs, temporaries); a resume drops log records past the
resumed step and a cut-off last line. ``train.log`` keeps what the console showed (``RunDir.echo``), appended across
resumes.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from trainer.io import atomic_write_json as write_json_atomic  # noqa: F401 (the name callers use)
from trainer.io import atomic_write_text

STEP_DIR = re.compile(r"^step-(\d+)$")
PACKAGES = ("embedstill", "torch", "transformers", "tokenizers", "accelerate", "datasets", "peft", "faiss-cpu",
            "hydra-core", "omegaconf", "numpy", "sentence-transformers", "wandb")
# Keys that may change between a run and its resume (they change nothing in the weights); every other key must
# stay as it was. Resume errors list these.
VOLATILE_KEYS = ("name", "run_dir", "resume", "paths", "extras", "logger", "eval", "train.stop_after_steps",
                 "train.progress_bar", "train.num_threads", "train.keep_last", "train.save_every_n_steps",
                 "train.keep_best", "train.early_stopping_patience",
                 "data.num_workers", "data.on_error", "teacher.batch_size", "teacher.cache_root",
                 "teacher.chunk_size")
LOG_FILES = ("metrics.jsonl", "eval.jsonl")
TRAIN_LOG = "train.log"  # the console's messages, one timestamped line each (never cleared: a run's history)
# A feature's keys and the key that turns it on: a state saved before the feature existed resumes while it is off.
FEATURE_SWITCHES = {"distill.unlabeled": "distill.unlabeled.files"}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def trained_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus volatile keys: what determines the trained weights."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == v_ or k.startswith(v_ + ".") for v_ in VOLATILE_KEYS)}


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha256(json.dumps(trained_config(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunDir:
    """Paths and writers of one run; ``is_main`` gates every write."""

    def __init__(self, root: str | Path, is_main: bool = True) -> None:
        self.root = Path(root)
        self.is_main = is_main
        self.states = self.root / "state"
        self.checkpoints = self.root / "checkpoints"

    def init(self, cfg: DictConfig, world_size: int, resumed_from: Optional[Path] = None) -> None:
        """Write ``config.yaml`` and ``run_info.json``. A fresh start (``resumed_from`` None) first clears the
        logs and ``DONE.json`` of an earlier attempt that never saved a state, so no step is logged twice."""
        if not self.is_main:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if resumed_from is None:
            for name in (*LOG_FILES, "DONE.json"):
                (self.root / name).unlink(missing_ok=True)
        (self.root / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_json_atomic(self.root / "run_info.json", {
            "git": git_info(), "packages": package_versions(), "python": sys.version.split()[0],
            "platform": platform.platform(), "argv": sys.argv, "world_size": world_size,
            "config_hash": config_hash(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed_from": str(resumed_from) if resumed_from is not None else None,
        })

    def holds_results(self) -> bool:
        """Whether the dir holds anything a run writes (a dir Hydra created for this start holds none)."""
        names = ("config.yaml", "run_info.json", *LOG_FILES, "state", "checkpoints", "DONE.json")
        return any((self.root / name).exists() for name in names)

    def clean_temporaries(self) -> list[Path]:
        """Remove ``.tmp-*`` files and folders a killed run left (run dir, state/, checkpoints/); returns them."""
        if not self.is_main:
            return []
        stale = [p for parent in (self.root, self.states, self.checkpoints) if parent.is_dir()
                 for p in parent.iterdir() if p.name.startswith(".tmp-")]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() \
                else path.unlink(missing_ok=True)
        return stale

    def append(self, name: str, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.root / name, "a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")

    def echo(self, message: str, console: bool = True) -> None:
        """Print ``message`` (rank 0; ``console=False``: file only) and append it to ``train.log``, so the run dir
        keeps what the console showed after the terminal is gone. ``tqdm.write`` keeps a progress bar intact."""
        if not self.is_main:
            return
        if console:
            from tqdm.auto import tqdm

            tqdm.write(message)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / TRAIN_LOG, "a", encoding="utf-8") as handle:
            handle.writelines(f"[{stamp}] {line}\n" for line in str(message).splitlines() or [""])

    def truncate_logs(self, step: int, names: tuple[str, ...] = LOG_FILES,
                      log: Callable[[str], None] = print) -> None:
        """On resume: drop records logged after ``step`` by the interrupted run (they are logged again), and a
        last line cut off by a kill (with a warning)."""
        if not self.is_main:
            return
        for name in names:
            path = self.root / name
            if path.exists():
                kept = [line for line, record in read_records(path, log) if record.get("step", 0) <= step]
                atomic_write_text(path, kept)

    # ---- complete step folders (state/ and checkpoints/) ----------------------------------------
    @staticmethod
    def step_dirs(parent: Path) -> list[Path]:
        """Complete ``step-N`` folders, oldest first (temporary ``.tmp-*`` folders are ignored)."""
        if not parent.exists():
            return []
        found = [(int(m.group(1)), p) for p in parent.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest_state(self) -> Optional[Path]:
        states = [p for p in self.step_dirs(self.states) if (p / "trainer_state.json").exists()]
        return states[-1] if states else None

    def rotate(self, parent: Path, keep: int, spare: Optional[Path] = None) -> None:
        """Keep the newest ``keep`` step folders of ``parent`` (0 = all) and ``spare`` (the best checkpoint)."""
        if not self.is_main or keep <= 0:
            return
        for old in self.step_dirs(parent)[:-keep]:
            if spare is None or old.name != spare.name:
                shutil.rmtree(old, ignore_errors=True)

    def mark_done(self, info: dict[str, Any]) -> None:
        if self.is_main:
            write_json_atomic(self.root / "DONE.json", info)


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def resumable_runs(runs: Path) -> list[tuple[str, str]]:
    """(run name, newest complete state) of each run dir under ``runs`` that ``resume=auto`` would continue: it
    holds a state and no ``DONE.json``."""
    found = []
    for root in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        state = RunDir(root).latest_state()
        if state is not None and not (root / "DONE.json").exists():
            found.append((root.name, state.name))
    return found


def read_records(path: Path, log: Callable[[str], None] = print) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every JSON line of ``path``. A broken last line (a write cut off by a kill) is dropped
    with a warning; a broken line before it is an error naming ``path:line``."""
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(keepends=True), start=1) if line.strip()]
    out = []
    for i, (n, line) in enumerate(lines):
        try:
            out.append((line if line.endswith("\n") else line + "\n", json.loads(line)))
        except json.JSONDecodeError as err:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{n}: not a JSON record ({err.msg} at column {err.colno})") from None
            log(f"warning: {path}:{n}: dropped a cut-off last line ({len(line.rstrip())} characters; the run was "
                "killed while writing it)")
    return out


def _new_and_off(key: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """``key`` is absent from the saved config and off now: by its own value, or by its feature's switch."""
    if key in saved:
        return False
    if now.get(key) in (None, False):
        return True
    switch = next((s for prefix, s in FEATURE_SWITCHES.items() if key.startswith(prefix + ".")), None)
    return switch is not None and switch not in saved and not now.get(switch)


def _unused_by_teacher(key: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """A ``teacher.*`` key of a saved config that the same teacher kind's schema no longer has: states saved
    before each kind had its own schema carry every kind's fields, which that kind never read."""
    return (key.startswith("teacher.") and key in saved and key not in now
            and saved.get("teacher._target_") == now.get("teacher._target_") is not None)


def check_resume_config(state_dir: Path, cfg: DictConfig, saved_state: dict[str, Any]) -> None:
    """Refuse to resume a state with a config that would train something else; name the changed keys.

    The reference is the trained config stored in the state (``trainer_state.json``), else the ``config.yaml``
    of the run dir holding it, else its ``config_hash`` (a state copied out of its run dir).
    """
    saved = saved_state.get("trained_config")
    source = "the state's trained config"
    if saved is None and (state_dir.parent.parent / "config.yaml").exists():
        saved, source = trained_config(OmegaConf.load(state_dir.parent.parent / "config.yaml")), "its run's config.yaml"
    may_change = ", ".join(VOLATILE_KEYS)
    if saved is None:
        if saved_state.get("config_hash") not in (None, config_hash(cfg)):
            raise ValueError(f"cannot resume {state_dir}: the config differs from the one it was trained with "
                             f"(config_hash {saved_state['config_hash']} -> {config_hash(cfg)}). Only these keys may "
                             f"change on resume: {may_change}. Resume with the same config, or start a new run.")
        return
    # JSON round trip: the stored config has lists where OmegaConf has ListConfig, and so on.
    now = json.loads(json.dumps(trained_config(cfg), default=str))
    saved = json.loads(json.dumps(saved, default=str))
    # A key newer than the state (absent there) that is off here trains the same thing: a run saved before a
    # feature existed resumes after an upgrade.
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                     and not _new_and_off(k, saved, now) and not _unused_by_teacher(k, saved, now))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise ValueError(f"cannot resume {state_dir}: the config differs from {source} ({details}). Only these "
                         f"keys may change on resume: {may_change}. Resume with the same config, or start a new "
                         "run (name=...).")
