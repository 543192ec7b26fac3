"""Student initialisation from a teacher: keep a chosen subset of its transformer layers (DistilBERT style).

    python -m trainer.train experiment=distill model.name_or_path='${asset:mpnet}' \
        model.init_from_teacher_layers='[0,2,4,6,8,10]'

The student is the model at ``model.name_or_path`` with only the listed layers left, in order; embeddings,
pooler and any shared parts (e.g. MPNet's relative attention bias) are kept as they are, and the config's
``num_hidden_layers`` is updated so the exported checkpoint reloads with the smaller depth.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn


def layer_list(backbone: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the ModuleList holding the ``num_hidden_layers`` transformer layers."""
    count = int(backbone.config.num_hidden_layers)
    for name, module in backbone.named_modules():
        for attr, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count and count > 0:
                return module, attr
    raise ValueError(f"{type(backbone).__name__}: no list of {count} layers found to take a subset of")


def keep_layers(backbone: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Drop every layer of ``backbone`` not in ``layers`` (in place); returns the backbone."""
    count = int(backbone.config.num_hidden_layers)
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("model.init_from_teacher_layers is empty: name at least one layer to keep")
    if sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= count:
        raise ValueError(f"model.init_from_teacher_layers={layers}: must be increasing, distinct indices in "
                         f"[0, {count - 1}] (the model has {count} layers)")
    parent, attr = layer_list(backbone)
    old = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([old[i] for i in layers]))
    backbone.config.num_hidden_layers = len(layers)
    if getattr(backbone.config, "layer_types", None):  # per-layer settings some architectures keep
        backbone.config.layer_types = [backbone.config.layer_types[i] for i in layers]
    for new_index, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # caches index layers by position
    return backbone
