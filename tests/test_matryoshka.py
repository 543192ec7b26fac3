"""Matryoshka loss: hand-computed equivalence, config wiring, truncated-dimension evaluation.

    pytest tests/test_matryoshka.py
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F


def manual_infonce(q: torch.Tensor, p: torch.Tensor, tau: float) -> float:
    """In-batch InfoNCE written out: -mean_i log softmax_j(q_i . p_j / tau)[i]."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ p[j]) / tau for j in range(p.shape[0])]
        total -= logits[i] - math.log(sum(math.exp(x) for x in logits))
    return total / q.shape[0]


def test_matryoshka_is_weighted_mean_over_renormalised_prefixes() -> None:
    from trainer.losses.infonce import InfoNCE
    from trainer.losses.matryoshka import Matryoshka

    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    p = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    loss = Matryoshka(InfoNCE(temperature=0.1), dims=[2, 4], weights=[1.0, 2.0])(q, p)
    parts = [(1.0, manual_infonce(F.normalize(q[:, :2], dim=-1), F.normalize(p[:, :2], dim=-1), 0.1)),
             (2.0, manual_infonce(F.normalize(q[:, :4], dim=-1), F.normalize(p[:, :4], dim=-1), 0.1)),
             (1.0, manual_infonce(q, p, 0.1))]
    expected = sum(w * v for w, v in parts) / 4.0
    assert abs(float(loss) - expected) < 1e-5
    # A prefix equal to the full dimension is not counted twice.
    same = Matryoshka(InfoNCE(temperature=0.1), dims=[8])(q, p)
    assert abs(float(same) - manual_infonce(q, p, 0.1)) < 1e-5


def test_config_wires_loss_and_evaluation(compose, tiny_data: dict[str, Path]) -> None:
    from trainer.build import build_encoder, build_objective
    from trainer.evaluation.retrieval import load_beir, matryoshka_retrieval
    from trainer.losses.matryoshka import Matryoshka

    cfg = compose("loss=matryoshka", "loss.matryoshka_dims=[8,16]")
    assert list(cfg.eval.matryoshka_dims) == [8, 16]  # the evaluator follows the loss
    encoder = build_encoder(cfg.model)
    objective = build_objective(cfg, encoder)
    assert isinstance(objective.contrastive, Matryoshka) and abs(objective.contrastive.temperature - 0.05) < 1e-6
    scores = matryoshka_retrieval(encoder, load_beir(tiny_data["beir"]), [8, 16, 32])
    assert {"dim8/ndcg_at_10", "dim16/ndcg_at_10"} <= set(scores) and not any(k.startswith("dim32") for k in scores)
    assert all(0.0 <= v <= 1.0 for k, v in scores.items() if "ndcg" in k)

    from trainer.build import Evaluator

    results = Evaluator(cfg.eval)(encoder)
    assert "tiny/dim8/ndcg_at_10" in results and "tiny/ndcg_at_10" in results
