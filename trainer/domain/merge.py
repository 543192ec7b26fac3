"""Weight interpolation of a base and an adapted model (LM-Cocktail style), the ratio chosen on dev sets.

    pytest tests/test_domain.py -k merge

    merged = r * adapted + (1 - r) * base      for every floating-point tensor of the backbone

r = 1 is the adapted model, r = 0 the base. Each ratio is scored on the in-domain dev set and (if given) a general
dev set; the ratio with the best mean main score wins, so forgetting of the general task counts against it.
Reference: Xiao et al. 2023, LM-Cocktail: Resilient Tuning of Language Models via Model Merging.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from trainer.models.encoder import Encoder
from trainer.models.merging import average_states


def interpolate(base: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor], ratio: float,
                ) -> dict[str, torch.Tensor]:
    """``ratio * adapted + (1 - ratio) * base`` for float tensors; other tensors (ids, counters) from adapted."""
    return average_states([adapted, base], [ratio, 1.0 - ratio])


def choose_ratio(base: Encoder, adapted: Encoder, ratios: Sequence[float],
                 score: Callable[[Encoder], dict[str, float]]) -> tuple[float, dict[float, dict[str, float]]]:
    """Score each ratio with ``score(encoder) -> {name: main score}``; best mean wins (ties: larger ratio).

    Leaves ``adapted`` holding the chosen merge.
    """
    base_state = {k: v.detach().clone() for k, v in base.backbone.state_dict().items()}
    adapted_state = {k: v.detach().clone() for k, v in adapted.backbone.state_dict().items()}
    results: dict[float, dict[str, float]] = {}
    for ratio in ratios:
        adapted.backbone.load_state_dict(interpolate(base_state, adapted_state, float(ratio)))
        scores = score(adapted)
        results[float(ratio)] = {**scores, "mean": sum(scores.values()) / len(scores)}
        print(f"merge ratio {ratio:.2f}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[float(ratio)].items()))
    best = max(results, key=lambda r: (results[r]["mean"], r))
    adapted.backbone.load_state_dict(interpolate(base_state, adapted_state, best))
    return best, results
