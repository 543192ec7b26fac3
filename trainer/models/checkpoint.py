"""Exported checkpoints: a folder that loads in sentence-transformers and transformers, plus our metadata.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000100

Layout (written to a temporary sibling folder, then renamed, so a crash never leaves a half checkpoint):
    config.json, model.safetensors, tokenizer files        -> transformers.AutoModel / AutoTokenizer
    modules.json, sentence_bert_config.json, 1_Pooling/,   -> sentence_transformers.SentenceTransformer
    2_Normalize/, config_sentence_transformers.json (prompts)
    embedstill.json                                        -> pooling, normalisation, max lengths, prompts,
                                                              base model, step, config hash
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from trainer.models.encoder import METADATA_FILE, Encoder, load_metadata

ST_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                   "last": "pooling_mode_lasttoken"}


def atomic_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temporary sibling folder, then rename it to ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            # Replacing an existing folder: move it aside first so there is always one complete copy.
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_sentence_transformers_files(encoder: Encoder, folder: Path) -> None:
    spec = encoder.spec
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if spec.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    # sentence-transformers has one max length; passages are the longer side.
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": max(spec.max_length_query, spec.max_length_passage), "do_lower_case": False})
    pooling = {"word_embedding_dimension": encoder.dim, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
               "pooling_mode_lasttoken": False, "include_prompt": not spec.exclude_prompt_from_pooling}
    pooling[ST_POOLING_KEYS[spec.pooling]] = True
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    _write_json(folder / "config_sentence_transformers.json",
                {"prompts": spec.prompts.sentence_transformers_prompts(), "default_prompt_name": None,
                 "similarity_fn_name": "cosine" if spec.normalize else "dot"})


def save_checkpoint(encoder: Encoder, target: Path, metadata: Optional[dict[str, Any]] = None,
                    backbone: Any = None) -> Path:
    """Write an exported checkpoint atomically. ``backbone`` overrides the module saved (e.g. merged LoRA)."""
    from trainer.models.lora import export_backbone, lora_metadata, save_adapter

    model = backbone if backbone is not None else export_backbone(encoder.backbone)  # LoRA: merged copy

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        save_adapter(encoder.backbone, tmp / "adapter")  # LoRA only: the adapter alone, for peft users
        tokenizer = encoder.tokenizer
        tokenizer.padding_side = encoder.spec.padding_side
        tokenizer.save_pretrained(tmp)
        write_sentence_transformers_files(encoder, tmp)
        _write_json(tmp / METADATA_FILE, {**encoder.metadata(), **lora_metadata(encoder.backbone), **(metadata or {})})

    return atomic_dir(Path(target), write)


def read_metadata(folder: Path) -> dict[str, Any]:
    meta = load_metadata(folder)
    if meta is None:
        raise FileNotFoundError(f"{folder}: no {METADATA_FILE}: not an embedstill checkpoint "
                                "(it lacks the pooling, normalisation, max lengths and prompts it was trained with)")
    return meta
