"""Distillation losses by name: each loss file registers its settings schema and how to build it.

    python -m trainer.train experiment=distill distill.margin_mse.weight=0.5     # distill.<name> of a registered loss
    pytest tests/test_registries.py

A loss file in ``trainer/losses/`` holds the module, a dataclass of its settings and one
``@register_distill_loss(name, part=..., config=..., inputs=...)`` on a builder. ``discover`` imports every module of
the package, so the schema of ``distill`` (``trainer.config.distill_schema``: one field per registered loss, checked
at compose time like every other group) and the objective pick it up without further edits; a YAML in
``conf/distill/`` turns it on by name. What the loss reads decides what the batch must carry:
    scores      (student (B, C), teacher (B, C), labels (B,)) candidate scores of each query
    embeddings  (student (N, D_s), teacher (N, D_t)) embeddings of the same texts
    unlabeled   the same, for the step's unlabeled texts (``distill.unlabeled``)
    bank        (student queries (B, D_t), teacher queries (B, D_t), the teacher's passages of the batch and of a
                draw from every training passage (C, D_t), labels (B,), mask (B, C)): asymmetric distillation
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

INPUTS = ("scores", "embeddings", "unlabeled", "bank")


@dataclass(frozen=True)
class Dims:
    """What a builder may need besides its own settings."""
    student: int  # the student's output dimension
    teacher: Optional[int]  # the teacher's embedding dimension; None for a teacher that only scores pairs
    align: bool = False  # distill.align: the student's own Dense head maps into the teacher's space


@dataclass(frozen=True)
class DistillLoss:
    name: str  # the config key: distill.<name>
    part: str  # the loss part's name in the logs
    config: type  # dataclass of distill.<name>; must have a float ``weight``
    inputs: str  # scores | embeddings | unlabeled
    build: Callable[[Any, Dims], nn.Module]  # (distill.<name>, dims) -> module with ``weight`` and ``inputs``
    needs_teacher_embeddings: bool = False  # a bi-encoder teacher (in-batch scores or its embeddings)
    active: Optional[Callable[[Any], bool]] = None  # on when this says so; default: weight > 0

    def is_on(self, settings: Any) -> bool:
        if settings is None:
            return False
        return bool(self.active(settings)) if self.active is not None else float(settings.get("weight", 0)) > 0


DISTILL_LOSSES: dict[str, DistillLoss] = {}


def register_distill_loss(name: str, *, part: str, config: type, inputs: str, needs_teacher_embeddings: bool = False,
                          active: Optional[Callable[[Any], bool]] = None) -> Callable:
    """Decorator on ``build(settings, dims) -> nn.Module``; registering one name twice with another builder fails."""
    if inputs not in INPUTS:
        raise ValueError(f"distillation loss {name!r}: inputs must be one of {INPUTS}, got {inputs!r}")

    def register(build: Callable[[Any, Dims], nn.Module]) -> Callable[[Any, Dims], nn.Module]:
        known = DISTILL_LOSSES.get(name)
        if known is not None and known.build.__qualname__ != build.__qualname__:
            raise ValueError(f"distillation loss {name!r} is registered twice ({known.build.__module__} and "
                             f"{build.__module__})")
        taken = {entry.part: entry.name for entry in DISTILL_LOSSES.values() if entry.name != name}
        if part in taken:
            raise ValueError(f"distillation loss {name!r}: part name {part!r} is already {taken[part]!r}'s")
        DISTILL_LOSSES[name] = DistillLoss(name, part, config, inputs, build, needs_teacher_embeddings, active)
        return build

    return register


def discover() -> dict[str, DistillLoss]:
    """Import every module of ``trainer.losses`` (each registers its losses); the registry, by name."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):  # this package's folder, not an import of it
        importlib.import_module(f"{__package__}.{module.name}")
    return dict(sorted(DISTILL_LOSSES.items()))


def active_losses(distill: Any) -> dict[str, DistillLoss]:
    """The registered losses that ``distill`` (the composed ``distill`` group, or None) turns on."""
    if distill is None:
        return {}
    return {name: entry for name, entry in discover().items() if entry.is_on(distill.get(name))}


def distill_weights(distill: Any) -> dict[str, float]:
    """Every registered loss's weight in ``distill`` (0 when it is off)."""
    on = active_losses(distill)
    return {name: float(distill.get(name).weight) if name in on else 0.0 for name in discover()}
