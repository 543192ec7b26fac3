"""``train.keep_best`` and ``train.early_stopping_patience``: the best checkpoint by one eval metric, and when to
stop looking for a better one.

    python -m trainer.train ... eval.every_n_steps=100 train.keep_best=news/ndcg_at_10 train.early_stopping_patience=5
    cat runs/<name>/checkpoints/best.json     # {"metric", "value", "step", "checkpoint"}; checkpoints/best -> step-N

Evaluations during training (step > 0) compete, higher is better; the score before training does not (there is no
checkpoint of it). A new best's checkpoint is written at its step (a save that step would write it anyway) and
``train.keep_last`` rotation spares it. Patience counts the evaluations since the best one. Rank 0 scores; the loop
shares the decision to stop with every rank. A resume replays ``eval.jsonl`` (already cut at the resumed step).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from trainer.checkpointing import Checkpointer
from trainer.io import atomic_write_json
from trainer.run import RunDir, read_records, step_name

BEST_FILE = "best.json"
BEST_LINK = "best"


class BestCheckpoint:
    """The best evaluation so far (its score, step and checkpoint) and the evaluations since it."""

    def __init__(self, metric: str, patience: Optional[int], run: RunDir, checkpointer: Checkpointer) -> None:
        self.metric, self.patience, self.run, self.checkpointer = metric, patience, run, checkpointer
        self.value: Optional[float] = None
        self.step: Optional[int] = None
        self.since = 0  # evaluations since the best one

    @classmethod
    def from_config(cls, cfg: DictConfig, run: RunDir, checkpointer: Checkpointer) -> Optional["BestCheckpoint"]:
        if not cfg.train.keep_best:
            return None
        return cls(cfg.train.keep_best, cfg.train.early_stopping_patience, run, checkpointer)

    @property
    def folder(self) -> Optional[Path]:
        return self.run.checkpoints / step_name(self.step) if self.step is not None else None

    def _score(self, step: int, value: float) -> bool:
        """Count one evaluation; True when it is a new best."""
        if self.value is None or value > self.value:
            self.value, self.step, self.since = value, step, 0
            return True
        self.since += 1
        return False

    def replay(self) -> None:
        """On resume (rank 0): the best and the patience count from the evaluations logged so far."""
        path = self.run.root / "eval.jsonl"
        if not self.run.is_main or not path.exists():
            return
        for _, record in read_records(path, self.run.echo):
            if record.get("step", 0) > 0 and isinstance(record.get(self.metric), (int, float)):
                self._score(record["step"], float(record[self.metric]))
        self.checkpointer.best = self.folder

    def update(self, step: int, results: dict[str, float], saved_at_this_step: bool) -> Optional[str]:
        """Rank 0, after an evaluation at ``step`` > 0: keep a new best's checkpoint (written now unless this step's
        save writes it); returns why training should stop, or None."""
        if self.metric not in results:
            raise KeyError(f"train.keep_best={self.metric}: not an evaluation result; the results are "
                           f"{', '.join(results)}")
        if self._score(step, float(results[self.metric])):
            self.checkpointer.best = self.folder
            if not saved_at_this_step:
                self.checkpointer.export(step)
            self._point()
            self.run.rotate(self.run.checkpoints, self.checkpointer.cfg.train.keep_last, spare=self.folder)
            self.run.echo(f"step {step}: best {self.metric} so far, {self.value:.4f}: {self.pointer()}")
            return None
        if self.patience is not None and self.since >= self.patience:
            return (f"early stopping: {self.metric} did not improve on {self.value:.4f} (step {self.step}) in "
                    f"{self.since} evaluations (train.early_stopping_patience={self.patience})")
        return None

    def pointer(self) -> str:
        """The best checkpoint, relative to the run dir."""
        assert self.folder is not None
        return str(self.folder.relative_to(self.run.root))

    def _point(self) -> None:
        """``checkpoints/best.json`` and the link ``checkpoints/best`` name the best checkpoint."""
        assert self.folder is not None
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run.checkpoints / BEST_FILE, {"metric": self.metric, "value": self.value,
                                                             "step": self.step, "checkpoint": self.pointer()})
        link, tmp = self.run.checkpoints / BEST_LINK, self.run.checkpoints / f".tmp-link-{BEST_LINK}"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(self.folder.name, tmp)
            os.replace(tmp, link)
        except OSError:  # a file system without links: best.json alone names it
            tmp.unlink(missing_ok=True)

    def info(self) -> dict[str, Any]:
        """For ``DONE.json``."""
        if self.step is None:
            return {"best_checkpoint": None}
        return {"best_checkpoint": self.pointer(), "best": {"metric": self.metric, "value": self.value,
                                                            "step": self.step}}
