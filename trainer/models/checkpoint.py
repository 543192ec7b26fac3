"""Exported checkpoints: a folder that loads in sentence-transformers and transformers, plus our metadata.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000100
    python -m trainer.push checkpoint=runs/demo/checkpoints/step-000100 repo_id=ORG/NAME

Layout (written to a temporary sibling folder, then renamed, so a crash never leaves a half checkpoint; the folder is
a complete model repository, publishable as it is):
    config.json, model.safetensors, tokenizer files        -> transformers.AutoModel / AutoTokenizer
    modules.json, sentence_bert_config.json, 1_Pooling/,   -> sentence_transformers.SentenceTransformer
    2_Normalize/, config_sentence_transformers.json (prompts; per-side max lengths for encode_query/encode_document)
    embedstill.json                                        -> pooling, normalisation, max lengths, prompts,
                                                              base model (Hub id when known), step, config hash
    README.md                                              -> model card with Hub metadata (trainer/models/card.py)
No file names a path of the training machine: the base model is a Hub id or a folder name, the run a path relative
to the checkpoint (``trainer/models/provenance.py``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from trainer.io import atomic_dir, current_umask, readable_per_umask, temp_dir  # noqa: F401 (re-exported)
from trainer.models.encoder import DENSE_DIR, METADATA_FILE, Encoder, load_metadata, read_metadata  # noqa: F401
from trainer.models.provenance import hub_id, model_name, portable_metadata

ST_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                   "last": "pooling_mode_lasttoken"}
# sentence-transformers 6.2 reads per-side lengths (``query_length``, ``document_length``) in
# sentence_bert_config.json: the version these folders are written for and tested with (an older one that does not
# know these keys passes them to its Transformer module as unknown arguments).
ST_FORMAT_VERSION = "6.2.0"
# Metadata blocks that hold texts (prompts, instructions), never paths: left as they are.
TEXT_KEYS = ("encoder", "task_instructions")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_sentence_transformers_files(encoder: Encoder, folder: Path) -> None:
    import torch
    import transformers

    spec = encoder.spec
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if encoder.dense is not None:  # hidden -> D_out, no bias, no activation (sentence-transformers' Dense)
        from safetensors.torch import save_file

        modules.append({"idx": 2, "name": "2", "path": DENSE_DIR, "type": "sentence_transformers.models.Dense"})
        (folder / DENSE_DIR).mkdir(exist_ok=True)
        _write_json(folder / DENSE_DIR / "config.json",
                    {"in_features": encoder.hidden_dim, "out_features": encoder.dim, "bias": False,
                     "activation_function": "torch.nn.modules.linear.Identity"})
        save_file({"linear.weight": encoder.dense.weight.detach().float().cpu().contiguous()},
                  str(folder / DENSE_DIR / "model.safetensors"))
    if spec.normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / f"{idx}_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    # ``encode_query`` / ``encode_document`` truncate at query_length / document_length (the training lengths);
    # a plain ``encode`` at max_seq_length, the passage length.
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": spec.max_length_passage, "do_lower_case": False,
                 "query_length": spec.max_length_query, "document_length": spec.max_length_passage})
    pooling = {"word_embedding_dimension": encoder.hidden_dim, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
               "pooling_mode_lasttoken": False, "include_prompt": not spec.exclude_prompt_from_pooling}
    pooling[ST_POOLING_KEYS[spec.pooling]] = True
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    _write_json(folder / "config_sentence_transformers.json",
                {"model_type": "SentenceTransformer",
                 "__version__": {"sentence_transformers": ST_FORMAT_VERSION, "transformers": transformers.__version__,
                                 "pytorch": torch.__version__},
                 "prompts": spec.prompts.sentence_transformers_prompts(), "default_prompt_name": None,
                 "similarity_fn_name": "cosine" if spec.normalize else "dot"})


def checkpoint_metadata(encoder: Encoder, target: Path, metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``embedstill.json`` for ``target``: the encoder's spec, LoRA settings, the caller's keys (step, run, ...),
    with the base model as a Hub id (or None) plus a short name, and every other path made portable."""
    from trainer.models.lora import lora_metadata

    meta = {**encoder.metadata(), **lora_metadata(encoder.backbone), **(metadata or {})}
    source = meta.pop("base_model", None) or encoder.source
    run = meta.get("run")
    anchor = Path(run).resolve() if isinstance(run, str) and run else target.parent.resolve()
    portable = {k: v if k in TEXT_KEYS else portable_metadata(v, target, anchor) for k, v in meta.items()}
    if isinstance(run, str) and run:
        portable["run"] = os.path.relpath(anchor, target.resolve())  # e.g. "../..": the run holding checkpoints/
    return {**portable, "base_model": hub_id(source), "base_model_name": model_name(source)}


def _portable_adapter(folder: Path, base_model: Optional[str]) -> None:
    """peft writes the base model's local path into the adapter's config and card: name the Hub id instead."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_model
    _write_json(config_file, config)
    meta = f"---\nlibrary_name: peft\nbase_model: {base_model}\n---\n" if base_model else ""
    (folder / "README.md").write_text(
        f"{meta}# LoRA adapter\n\nThe adapter alone (peft), trained with embedstill; the folder above holds the same "
        "model with the adapter merged into the weights. Load it onto the base model with "
        "`peft.PeftModel.from_pretrained(base, path)`.\n")


def save_checkpoint(encoder: Encoder, target: Path, metadata: Optional[dict[str, Any]] = None,
                    backbone: Any = None) -> Path:
    """Write an exported checkpoint atomically, model card included. ``backbone`` overrides the module saved
    (e.g. merged LoRA)."""
    from trainer.models.card import write_model_card
    from trainer.models.lora import export_backbone, save_adapter

    target = Path(target)
    model = backbone if backbone is not None else export_backbone(encoder.backbone)  # LoRA: merged copy
    meta = checkpoint_metadata(encoder, target, metadata)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        save_adapter(encoder.backbone, tmp / "adapter")  # LoRA only: the adapter alone, for peft users
        if (tmp / "adapter" / "adapter_config.json").exists():
            _portable_adapter(tmp / "adapter", meta["base_model"])
        tokenizer = encoder.tokenizer
        tokenizer.padding_side = encoder.spec.padding_side
        tokenizer.save_pretrained(tmp)
        write_sentence_transformers_files(encoder, tmp)
        _write_json(tmp / METADATA_FILE, meta)
        write_model_card(tmp, location=target)  # the card finds the run (eval results) from the final location

    return atomic_dir(target, write)
