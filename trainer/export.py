"""Export a checkpoint for deployment: ONNX (pooling + normalisation inside), int8, model card.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090
    python -m trainer.export checkpoint=... out=deploy/news-minilm quantize=false eval=none

Writes <out>/model.onnx (+ model_int8.onnx), tokenizer files, embedstill.json, export.json, README.md.
Fails when ONNX Runtime and PyTorch disagree by more than verify.tolerance. Returns the max abs diff.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR, register_configs

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from trainer.exporting.job import run_export  # heavy imports after Hydra has parsed the command line

    return float(run_export(cfg)["verify"]["max_abs_diff"])


if __name__ == "__main__":
    main()
