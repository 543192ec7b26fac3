"""Decoder-LLM embedders: bidirectional attention where the architecture allows, and GGUF -> safetensors folders.

    python -m trainer.assets                                # converts the bundled SmolLM2-135M GGUF once
    python -m trainer.train experiment=smollm2_lora         # LoRA on SmolLM2 with last-token pooling

Last-token pooling, EOS appending and left padding live in ``Encoder`` (``pooling: last``). Here:

* ``make_bidirectional`` drops the causal mask of a decoder (LLM2Vec / GritLM style): models whose masks come
  from transformers' ``create_causal_mask`` (Llama, Mistral, Qwen2/3, Gemma, ...) honour ``config.is_causal``;
  the attention modules' own ``is_causal`` flags (used by SDPA when no mask is materialised) are cleared too. A
  probe forward checks that an early token now sees a later one; architectures that ignore the flag fail loudly.
* ``gguf_to_folder`` dequantises a GGUF file (``AutoModel.from_pretrained(dir, gguf_file=...)``, needs the
  ``gguf`` package: ``pip install -e .[decoder]``) and writes a plain safetensors folder that reloads in
  under a second; ``save_pretrained`` refuses GGUF-loaded models, so the state dict is written directly.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def _probe(backbone: nn.Module) -> bool:
    """True when position 0's hidden state depends on a later token (attention is bidirectional)."""
    vocab = int(backbone.config.vocab_size)
    device = next(backbone.parameters()).device
    ids = torch.tensor([[1 % vocab, 2 % vocab, 3 % vocab]], device=device)
    other = ids.clone()
    other[0, 2] = 4 % vocab
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        first = backbone(input_ids=ids).last_hidden_state[0, 0]
        second = backbone(input_ids=other).last_hidden_state[0, 0]
    backbone.train(was_training)
    return not torch.allclose(first, second)


def make_bidirectional(backbone: nn.Module) -> nn.Module:
    """Let every token attend to every real token (in place). Raises where the architecture ignores it."""
    config = backbone.config
    if not getattr(config, "is_decoder", False) and config.model_type in ("bert", "roberta", "xlm-roberta",
                                                                           "mpnet", "distilbert", "deberta-v2"):
        return backbone  # encoders already attend both ways
    config.is_causal = False  # create_causal_mask -> create_bidirectional_mask; saved in config.json
    for module in backbone.modules():
        if hasattr(module, "is_causal") and isinstance(module.is_causal, bool):
            module.is_causal = False
    if not _probe(backbone):
        raise ValueError(f"model.bidirectional=true: {type(backbone).__name__} ({config.model_type}) keeps its "
                         "causal mask (its masks do not come from transformers' create_causal_mask); "
                         "set model.bidirectional=false")
    return backbone


def gguf_to_folder(gguf_file: Path, target: Path) -> Path:
    """Dequantise ``gguf_file`` to fp32 and write a transformers folder at ``target`` (once; atomic)."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from trainer.io import atomic_dir

    target = Path(target)
    if (target / "model.safetensors").exists():
        return target
    gguf_file = Path(gguf_file)
    if not gguf_file.exists():
        raise FileNotFoundError(f"{gguf_file}: no such GGUF file")
    model = AutoModel.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)

    def write(tmp: Path) -> None:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        tokenizer.save_pretrained(tmp)

    return atomic_dir(target, write)

