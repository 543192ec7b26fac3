"""Publish a checkpoint to the Hugging Face Hub (``huggingface_hub``: create_repo, upload_folder).

    python -m trainer.push checkpoint=runs/demo/checkpoints/step-000064 repo_id=ORG/NAME
    python -m trainer.push checkpoint=... repo_id=ORG/NAME private=false revision=v1 commit_message="News-tuned"
    python -m trainer.push checkpoint=... repo_id=ORG/NAME dry_run=true    # card and checks only

Needs the network (HF_HUB_OFFLINE=0) and a token with write access ($HF_TOKEN or ``hf auth login``). The card is
rewritten with the scores evaluated since the save, the folder is checked for paths of this machine, then uploaded
in one commit (``trainer/hub.py``). Returns the commit URL (None for a dry run).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="push", version_base="1.3")
def main(cfg: DictConfig) -> Optional[str]:
    from trainer.hub import PublishError, publish  # heavy imports after Hydra has parsed the command line

    try:
        report = publish(Path(cfg.checkpoint), cfg.repo_id, private=cfg.private, revision=cfg.revision,
                         commit_message=cfg.commit_message, refresh_card=cfg.refresh_card, dry_run=cfg.dry_run)
    except PublishError as err:
        print(f"[push] {err}", file=sys.stderr)
        sys.exit(1)
    return report.commit_url


if __name__ == "__main__":
    main()
