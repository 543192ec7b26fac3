"""Evaluate exported checkpoints with the prompts, pooling and normalisation they were trained with.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/step-000100        # one checkpoint
    python -m trainer.evaluate run_dir=runs/demo                                   # every complete checkpoint
    python -m trainer.evaluate run_dir=runs/demo watch=true                        # follow a training run
    python -m trainer.evaluate runs=[runs/a,runs/b] out_dir=reports                # leaderboard across runs
    python -m trainer.evaluate checkpoint=PATH eval=news eval.batch_size=128       # another task set

Results: ``<run>/eval/<checkpoint>/<task>.json`` (MTEB results layout), ``<run>/eval/leaderboard.{csv,md}``,
``<run>/eval/plots/<task>.png``. Returns the main metric (``eval.metric`` or the first task's main score); exits 1
when a task failed (after writing every result). A second ``run_dir=`` run evaluates only what is missing, failed or changed.
"""
from __future__ import annotations

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    from trainer.evaluation.watcher import TasksFailed, run_from_config  # heavy imports after Hydra parsed it

    try:
        return run_from_config(cfg)
    except TasksFailed as err:  # every result is written; the exit status says some failed
        print(f"[eval] {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
