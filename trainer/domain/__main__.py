"""Adapt a model to a new domain from a folder of unlabeled text.

    python -m trainer.domain.corpus healthtweets runs/healthtweets-text --max-docs 3000   # example text
    python -m trainer.domain experiment=domain_adapt domain.text_dir=runs/healthtweets-text
    python -m trainer.domain experiment=domain_adapt domain.text_dir=... domain.query_mode=ict \
        domain.merge.enabled=false

Pseudo-queries -> negatives mined with the teacher -> contrastive + listwise KL -> before/after eval in-domain
and on the general task -> merge with the base (ratio chosen on dev). Report: <run_dir>/domain_report.{json,md}.
Returns the in-domain nDCG@10 of the final model.
"""
from __future__ import annotations

from typing import Optional

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    from trainer.domain.job import run_domain  # heavy imports after Hydra has parsed the command line

    return run_domain(cfg)


if __name__ == "__main__":
    main()
    from trainer.distributed import exit_process_group

    exit_process_group()  # under several processes: barrier, destroy, exit without the gloo teardown race
