"""Train (fine-tune or distill) an embedding model.

    python -m trainer.train experiment=demo
    python -m trainer.train experiment=demo name=myrun resume=auto          # continue a stopped run
    accelerate launch --multi_gpu --num_processes 4 -m trainer.train experiment=demo
    python -m trainer.train -m hparams_search=<name>                        # Optuna sweep

Returns the main eval metric, which Hydra's sweepers optimise.
"""
from __future__ import annotations

from typing import Optional

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    from trainer.evaluation.tasks import check_task_names  # heavy imports after Hydra has parsed the command line
    from trainer.loop import train
    from trainer.sweep import run_trial  # multirun: trial.json per run, a failed trial does not end the sweep

    check_task_names(cfg.eval.tasks)  # before any work: each name is a result file's name
    return run_trial(cfg, train)


if __name__ == "__main__":
    main()
