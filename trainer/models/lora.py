"""LoRA adapters (peft) on the encoder backbone: per-architecture targets, adapters in checkpoints, merged export.

    python -m trainer.train model=lora                     # MiniLM with LoRA (conf/model/lora.yaml)
    python -m trainer.train experiment=smollm2_lora        # SmolLM2-135M, last-token pooling, LoRA
    pytest tests/test_lora.py

* ``apply_lora`` wraps ``encoder.backbone`` in a ``peft`` model; only adapter weights train. The wrap happens in
  ``build_encoder`` before ``accelerator.prepare``, so resume states (``accelerator.save_state``) hold the same
  module tree a resumed run builds, key for key: no adapter weights go missing on resume, and nothing is loaded
  with ``strict=False``.
* Exported checkpoints (``save_checkpoint``) hold the **merged** model (base + B@A folded into the weights, no
  peft needed to load it: transformers, sentence-transformers, ONNX export) and the adapter alone under
  ``adapter/`` (``PeftModel.from_pretrained(base, ckpt/"adapter")``).
"""
from __future__ import annotations

import copy
import sys
from typing import Any, Mapping

from torch import nn

# model_type -> module names LoRA wraps (attention projections and MLP). Pooler heads are excluded below:
# their output never reaches the embedding, so their adapters would never get gradients.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "roberta": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "electra": ["query", "key", "value", "dense"],
    "mpnet": ["q", "k", "v", "o", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "modernbert": ["Wqkv", "Wo", "Wi"],
    "t5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
for _decoder in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2"):
    DEFAULT_TARGETS[_decoder] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EXCLUDE = r".*pooler.*"
ADAPTER_DIR = "adapter"


def default_targets(model_type: str) -> list[str]:
    if model_type not in DEFAULT_TARGETS:
        raise ValueError(f"no default LoRA target modules for model type {model_type!r} (known: "
                         f"{sorted(DEFAULT_TARGETS)}): set model.lora.target_modules=[...] to the names of its "
                         "attention/MLP linear layers")
    return list(DEFAULT_TARGETS[model_type])


def is_peft(module: nn.Module) -> bool:
    """Whether ``module`` is a peft model (without importing peft, which takes seconds, when unused)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def apply_lora(encoder: nn.Module, cfg: Mapping[str, Any]) -> nn.Module:
    """Wrap ``encoder.backbone`` with LoRA adapters per ``cfg`` (``conf/model/lora.yaml``); returns the encoder."""
    from peft import LoraConfig, get_peft_model

    backbone = encoder.backbone
    targets = list(cfg["target_modules"]) if cfg.get("target_modules") else default_targets(
        backbone.config.model_type)
    peft_config = LoraConfig(r=int(cfg["r"]), lora_alpha=int(cfg["alpha"]), lora_dropout=float(cfg["dropout"]),
                             target_modules=targets, exclude_modules=EXCLUDE, bias="none")
    encoder.backbone = get_peft_model(backbone, peft_config)
    return encoder


def export_backbone(backbone: nn.Module) -> nn.Module:
    """The module an exported checkpoint stores: a merged copy for peft models (training weights untouched)."""
    if not is_peft(backbone):
        return backbone
    # A copy: merging in place and unmerging later would perturb the training weights (W + BA - BA != W in fp).
    return copy.deepcopy(backbone).merge_and_unload()


def save_adapter(backbone: nn.Module, folder: Any) -> None:
    """Write the adapter alone (adapter_config.json + adapter_model.safetensors) when there is one."""
    if is_peft(backbone):
        backbone.save_pretrained(str(folder), safe_serialization=True)


def lora_metadata(backbone: nn.Module) -> dict[str, Any]:
    """Checkpoint metadata: the base architecture and the adapter settings (empty without LoRA)."""
    if not is_peft(backbone):
        return {}
    config = backbone.peft_config["default"]
    base = backbone.get_base_model()
    return {"architecture": type(base).__name__,
            "lora": {"r": config.r, "alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
                     "adapter": ADAPTER_DIR, "merged": True}}
