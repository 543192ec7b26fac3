"""InfoNCE against hand-computed values, masking, symmetric term, learnable temperature."""
from __future__ import annotations

import math

import torch

from trainer.losses.infonce import InfoNCE


def _unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_infonce_matches_hand_computed_value() -> None:
    # 2 queries, 1 hard negative each: passages [p0, n0, p1, n1]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    tau = 0.5
    loss = InfoNCE(temperature=tau, mask_duplicate_positives=False)(q, p)
    # query 0 scores: [1, .6, 0, .8] / .5 ; label 0.  query 1 scores: [0, .8, 1, .6] / .5 ; label 2
    s0 = [1 / tau, 0.6 / tau, 0.0, 0.8 / tau]
    s1 = [0.0, 0.8 / tau, 1 / tau, 0.6 / tau]
    expected = (-(s0[0] - math.log(sum(math.exp(x) for x in s0)))
                - (s1[2] - math.log(sum(math.exp(x) for x in s1)))) / 2
    assert abs(loss.item() - expected) < 1e-6


def test_in_batch_copy_of_positive_is_masked() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # query 1's passage has the same text as query 0's positive
    ids = torch.tensor([7, 7])
    loss_fn = InfoNCE(temperature=1.0)
    masked = loss_fn(q, p, ids)
    # query 0: the copy at index 1 is removed -> only its positive remains -> loss 0 for query 0;
    # query 1: positive is index 1 (the copy at index 0 is masked for it too) -> loss 0.
    assert abs(masked.item()) < 1e-6
    unmasked = InfoNCE(temperature=1.0, mask_duplicate_positives=False)(q, p, ids)
    assert unmasked.item() > 0.1


def test_symmetric_adds_passage_to_query_term() -> None:
    q = _unit([1.0, 0.2], [0.1, 1.0], [0.7, 0.7])
    p = _unit([0.9, 0.1], [0.0, 1.0], [0.5, 0.6])
    tau = 0.1
    sym = InfoNCE(temperature=tau, symmetric=True)(q, p)
    scores = q @ p.T / tau
    labels = torch.arange(3)
    expected = (torch.nn.functional.cross_entropy(scores, labels)
                + torch.nn.functional.cross_entropy(scores.T, labels)) / 2
    assert torch.allclose(sym, expected, atol=1e-6)


def test_learnable_temperature_gets_gradient_and_one_convention() -> None:
    loss_fn = InfoNCE(temperature=0.05, learnable_temperature=True)
    assert abs(loss_fn.temperature - 0.05) < 1e-7
    q = _unit([1.0, 0.3], [0.4, 1.0])
    loss = loss_fn(q, _unit([0.9, 0.5], [0.5, 0.9]))
    loss.backward()
    assert loss_fn.log_inv_temperature.grad is not None and loss_fn.log_inv_temperature.grad.abs() > 0
    fixed = InfoNCE(temperature=0.05)
    assert not any(p.requires_grad for p in fixed.parameters())


def test_hard_negatives_stay_grouped_with_their_query() -> None:
    # 3 queries x (1 + 2) passages; labels must be 0, 3, 6 — the positive of each group.
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(9, 8), dim=-1)
    loss = InfoNCE(temperature=0.1, mask_duplicate_positives=False)(q, p)
    expected = torch.nn.functional.cross_entropy(q @ p.T / 0.1, torch.tensor([0, 3, 6]))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_temperature_below_the_clamp_is_refused_and_the_used_one_is_reported() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"loss.temperature must be >= 0.01 .* got 0.001"):
        InfoNCE(temperature=0.001)
    learnable = InfoNCE(temperature=0.02, learnable_temperature=True)
    with torch.no_grad():
        learnable.log_inv_temperature.fill_(math.log(1000.0))  # trained below the floor: tau 0.001
    assert abs(learnable.temperature - 0.01) < 1e-7  # what the loss divides by, and what gets logged
    assert torch.allclose(learnable.scale(), torch.tensor(100.0))
