"""Weight averaging of checkpoints fine-tuned from one base model (model soups, LM-Cocktail).

    python -m trainer.merge checkpoints='[runs/a/checkpoints/step-000173,runs/b/checkpoints/step-000235]' \
        weights='[0.7,0.3]' out=runs/merged/a70-b30

    merged = sum_i w_i * theta_i      for every floating-point tensor (backbone and Dense head), sum_i w_i = 1

Two students trained from the same base on different data often sit in one linear basin: their average keeps much
of each one's strengths (Wortsman et al. 2022, Model soups; Xiao et al. 2023, LM-Cocktail). The merged folder takes
the first checkpoint's tokenizer, pooling, lengths and prompts (the others may be any model folder of the same
architecture, e.g. the base model: LM-Cocktail's merge with the base); ``merged_from`` in its embedstill.json names the
sources and weights.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from trainer.models.checkpoint import save_checkpoint
from trainer.models.encoder import METADATA_FILE, Encoder, load_metadata


def average_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                   ) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * states[i][name]`` for float tensors; other tensors (ids, counters) from the first.

    Accumulates in float32 and casts back to the first state's dtype, so bf16 inputs do not lose the small weights.
    """
    if len(states) != len(weights) or not states:
        raise ValueError(f"{len(states)} states and {len(weights)} weights: give one weight per state")
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            only = sorted(state.keys() ^ first.keys())[:3]
            raise ValueError(f"model {i} and model 0 differ in parameters (e.g. {only}): cannot merge")
        for name, tensor in state.items():
            if tensor.shape != first[name].shape:
                raise ValueError(f"model {i} and model 0 differ in the shape of {name} "
                                 f"({tuple(tensor.shape)} vs {tuple(first[name].shape)}): cannot merge")
    merged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            total = sum(float(w) * state[name].float() for w, state in zip(weights, states))
            merged[name] = total.to(tensor.dtype)
        else:
            merged[name] = tensor.clone()
    return merged


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """One finite weight per checkpoint, summing to 1 (a sum off by more than 1e-6 is an error, never rescaled)."""
    if len(weights) != n:
        raise ValueError(f"weights has {len(weights)} values for {n} checkpoints: give one per checkpoint")
    if not all(math.isfinite(float(w)) for w in weights):
        raise ValueError(f"weights {list(weights)}: every weight must be a finite number")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights {list(weights)} sum to {sum(weights):.6g}, not 1: the merge is an average")
    return [float(w) for w in weights]


def check_out(out: Path, checkpoints: Sequence[Path], overwrite: bool) -> None:
    """Refuse an ``out`` whose replacement would lose something: a source checkpoint (always) or a folder that is
    not an earlier merge (unless ``overwrite``). Runs before any weights are read."""
    target = out.resolve()
    for checkpoint in checkpoints:
        source = checkpoint.resolve()
        if target == source or target in source.parents or source in target.parents:
            raise ValueError(f"out={out}: overlaps the source checkpoint {checkpoint}; writing there would replace "
                             "or nest inside it: give the merge a folder of its own")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out}: is a file, not a folder")
    if not out.exists() or not any(out.iterdir()) or overwrite:
        return
    try:
        meta = load_metadata(out)
    except ValueError:  # unreadable metadata: not an earlier merge
        meta = None
    if isinstance(meta, dict) and "merged_from" in meta:
        return  # an earlier merge: replaced atomically
    names = sorted(p.name for p in out.iterdir())
    raise ValueError(f"out={out}: exists and is not an earlier merge (it holds {', '.join(names[:5])}"
                     f"{', ...' if len(names) > 5 else ''}): give another out, or overwrite=true to replace it")


def merge_checkpoints(checkpoints: Sequence[str | Path], weights: Sequence[float], out: str | Path,
                      overwrite: bool = False) -> Path:
    """Average the checkpoints' weights into ``out`` (written atomically); returns ``out``."""
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise ValueError(f"checkpoints: {len(paths)} given, a merge needs at least two")
    weights = check_weights(weights, len(paths))
    if not (paths[0] / METADATA_FILE).is_file():
        raise FileNotFoundError(f"{paths[0]}: not an exported checkpoint (no {METADATA_FILE}); the first checkpoint "
                                "gives the merge its prompts and lengths")
    for path in paths[1:]:  # the others give weights only: a base model's folder (or Hub id) is fine
        if path.exists() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
    out = Path(out)
    check_out(out, paths, overwrite)
    encoders = [Encoder.from_pretrained(str(p)) for p in paths]
    first = encoders[0]
    if len({e.dense is None for e in encoders}) > 1:
        raise ValueError("some checkpoints have a Dense head and some do not: cannot merge")
    first.backbone.load_state_dict(average_states([e.backbone.state_dict() for e in encoders], weights))
    if first.dense is not None:
        first.dense.load_state_dict(average_states([e.dense.state_dict() for e in encoders], weights))
    sources = [{"checkpoint": os.path.relpath(p.resolve(), out.resolve().parent) if p.exists() else str(p),
                "weight": w} for p, w in zip(paths, weights)]
    for encoder, path in zip(encoders[1:], paths[1:]):
        if encoder.spec != first.spec:
            print(f"[merge] {path}: prompts or lengths differ from {paths[0]}; the merge keeps the first's")
    meta = {k: v for k, v in (load_metadata(paths[0]) or {}).items()
            if k in ("task_instructions", "base_model")}
    return save_checkpoint(first, out, {**meta, "merged_from": sources, "step": None, "final": True})
