"""LoRA: per-architecture targets; save -> load -> merge equality; merged export loads without peft.

    pytest tests/test_lora.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

TEXTS = ["w1 w2 w3", "w4 w5", "query w9 w10 w11 w12"]


def lora_encoder(compose, *overrides: str):
    from trainer.build import build_encoder

    cfg = compose("model=lora", *overrides)
    encoder = build_encoder(cfg.model)
    # Adapters start as B=0 (a no-op); give them weights so merging has something to fold in.
    gen = torch.Generator().manual_seed(0)
    for name, param in encoder.backbone.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.2
    return encoder


def test_targets_and_trainable_parameters(compose) -> None:
    encoder = lora_encoder(compose)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable if "lora_A" in n}
    assert wrapped == {"query", "key", "value", "dense"}
    assert not any("pooler" in n for n in trainable)  # never reaches the embedding: no adapter there

    from trainer.models.lora import default_targets

    assert "q_proj" in default_targets("llama") and "down_proj" in default_targets("qwen2")
    with pytest.raises(ValueError, match="model.lora.target_modules"):
        default_targets("made-up-arch")


def test_save_load_merge_equality(compose, tiny_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModel

    from trainer.models import Encoder
    from trainer.models.checkpoint import save_checkpoint

    encoder = lora_encoder(compose)
    encoder.eval()
    expected = encoder.encode(TEXTS, side="query")
    ckpt = save_checkpoint(encoder, tmp_path / "ckpt", {"step": 1})

    # The training model is untouched by the export (still a peft model with unmerged adapters).
    assert type(encoder.backbone).__name__.startswith("Peft")
    np_close = lambda a, b: torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=1e-5, rtol=1e-4)
    np_close(encoder.encode(TEXTS, side="query"), expected)

    # 1. Merged export: plain transformers weights, loads without peft, same embeddings.
    with safe_open(str(ckpt / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any("lora" in k or "base_model" in k or "base_layer" in k for k in keys)
    _, info = AutoModel.from_pretrained(str(ckpt), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    merged = Encoder.from_pretrained(str(ckpt))
    np_close(merged.encode(TEXTS, side="query"), expected)
    meta = json.loads((ckpt / "embedstill.json").read_text())
    assert meta["lora"]["r"] == 16 and meta["architecture"] == "BertModel"

    # 2. The adapter alone on the original base model: same embeddings again.
    base = AutoModel.from_pretrained(str(tiny_model))
    adapted = Encoder(PeftModel.from_pretrained(base, str(ckpt / "adapter")), merged.tokenizer, merged.spec)
    np_close(adapted.encode(TEXTS, side="query"), expected)

    # 3. The adapters did change the model: the base alone encodes differently.
    plain = Encoder(AutoModel.from_pretrained(str(tiny_model)), merged.tokenizer, merged.spec)
    assert (abs(plain.encode(TEXTS, side="query") - expected)).max() > 1e-3


def test_lora_state_roundtrip_has_no_missing_keys(compose, tmp_path: Path) -> None:
    """accelerate save_state/load_state of a LoRA objective restores every adapter weight (strict load)."""
    from accelerate import Accelerator

    from trainer.build import build_objective

    cfg = compose("model=lora")
    accelerator = Accelerator(cpu=True)
    source = accelerator.prepare(build_objective(cfg, lora_encoder(compose)))
    accelerator.save_state(str(tmp_path / "state"))
    accelerator._models.clear()
    target_objective = build_objective(cfg, lora_encoder(compose, "train.seed=1"))
    for name, param in target_objective.named_parameters():
        if "lora_" in name:
            param.data.zero_()
    target = accelerator.prepare(target_objective)
    accelerator.load_state(str(tmp_path / "state"))  # strict: a missing or unexpected key raises
    src, dst = source.state_dict(), target.state_dict()
    assert src.keys() == dst.keys() and any("lora_B" in k for k in src)
    for key in src:
        assert torch.equal(src[key], dst[key]), key
    assert OmegaConf.select(cfg, "model.lora.enabled")
