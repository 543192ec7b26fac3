"""Evaluate exported checkpoints with the prompts, pooling and normalisation they were trained with.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/step-000100        # one checkpoint
    python -m trainer.evaluate run_dir=runs/demo                                   # every complete checkpoint
    python -m trainer.evaluate run_dir=runs/demo watch=true                        # follow a training run
    python -m trainer.evaluate runs=[runs/a,runs/b] out_dir=reports                # leaderboard across runs
    python -m trainer.evaluate checkpoint=PATH eval=news eval.batch_size=128       # another task set

Results: ``<run>/eval/<checkpoint>/<task>.json`` (MTEB results layout), ``<run>/eval/leaderboard.{csv,md}``,
``<run>/eval/plots/<task>.png``. Returns the main metric (``eval.metric`` or the first task's main score).
"""
from __future__ import annotations

from typing import Optional

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    from trainer.evaluation.watcher import run_from_config  # heavy imports after Hydra parsed the command line

    return run_from_config(cfg)


if __name__ == "__main__":
    main()
    from trainer.distributed import exit_process_group

    exit_process_group()  # under several processes: barrier, destroy, exit without the gloo teardown race
