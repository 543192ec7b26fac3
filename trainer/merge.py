"""Average checkpoints fine-tuned from one base model into one checkpoint (trainer/models/merging.py).

    python -m trainer.merge checkpoints='[runs/a/checkpoints/step-000173,runs/b/checkpoints/step-000235]' \
        weights='[0.7,0.3]' out=runs/merged/a70-b30
    python -m trainer.evaluate checkpoint=runs/merged/a70-b30 eval=suite     # then score it like any checkpoint
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="merge", version_base="1.3")
def main(cfg: DictConfig) -> str:
    from trainer.models.merging import merge_checkpoints  # heavy imports after Hydra has parsed the command line

    checkpoints = list(cfg.checkpoints)
    weights = list(cfg.weights) if cfg.weights is not None else [1.0 / len(checkpoints)] * len(checkpoints)
    out = merge_checkpoints(checkpoints, weights, cfg.out, overwrite=cfg.overwrite)
    print(f"[merge] {' + '.join(f'{w:g} x {c}' for w, c in zip(weights, checkpoints))} -> {out}")
    return str(out)


if __name__ == "__main__":
    main()
