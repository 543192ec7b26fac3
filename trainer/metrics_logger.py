"""Metrics sinks: ``metrics.jsonl`` in the run dir always, wandb when ``logger.kind=wandb`` (offline by default).

    python -m trainer.train experiment=demo logger=wandb      # then: wandb sync runs/<name>/wandb/offline-run-*
    WANDB_MODE=disabled python -m trainer.train ... logger=wandb   # the environment wins over logger.mode
"""
from __future__ import annotations

import os
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from trainer.optional import require
from trainer.run import RunDir


class MetricsLogger:
    def __init__(self, cfg: DictConfig, run: RunDir, full_config: DictConfig) -> None:
        self.run = run
        self.wandb: Optional[Any] = None
        if cfg.kind not in ("none", "wandb"):
            raise ValueError(f"logger.kind must be none or wandb, got {cfg.kind!r}")
        mode = wandb_mode(cfg)
        if run.is_main and cfg.kind == "wandb" and mode != "disabled":
            wandb = require("wandb", "logger=wandb", "wandb")  # an optional dependency
            os.environ.setdefault("WANDB_DIR", str(run.root))
            self.wandb = wandb.init(project=cfg.project, mode=mode, dir=str(run.root), name=run.root.name,
                                    tags=list(cfg.tags), config=OmegaConf.to_container(full_config, resolve=True))

    def log(self, record: dict[str, Any], file: str = "metrics.jsonl") -> None:
        self.run.append(file, record)
        if self.wandb is not None:
            step = record.get("step")
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def finish(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def wandb_mode(cfg: DictConfig) -> str:
    """``WANDB_MODE`` from the environment (as wandb documents it) wins over ``logger.mode``."""
    return os.environ.get("WANDB_MODE") or cfg.mode
