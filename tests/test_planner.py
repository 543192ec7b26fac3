"""The planner: batch arithmetic, negatives per query, memory estimate, near-duplicate warnings.

    pytest tests/test_planner.py
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer.data.schema import Example


def ex(query: str, pos: str, neg: list[str] | None = None) -> Example:
    return Example(query=query, pos=[pos], neg=neg or [])


def test_plan_numbers_and_file(compose, tmp_path: Path) -> None:
    from trainer.build import build_encoder, build_objective
    from trainer.planner import activation_bytes, make_plan

    cfg = compose("train.batch_size=8", "data.num_negatives=3", "train.gradient_accumulation_steps=2",
                  "train.mini_batch_size=4")
    objective = build_objective(cfg, build_encoder(cfg.model))
    examples = [ex(f"q{i}", f"passage {i}", [f"n{i}"]) for i in range(40)]
    plan = make_plan(cfg, objective, examples, world_size=4)
    assert (plan.gathered_batch, plan.queries_per_optimizer_step) == (32, 64)
    # 32 queries x (1 positive + 3 hard) passages; the 31 other queries' 4 passages each are in-batch negatives.
    assert plan.passages_per_query == 128
    assert (plan.negatives_per_query_in_batch, plan.negatives_per_query_hard) == (124, 3)
    # Tiny BERT: 2 layers, hidden 32, 2 heads; mini-batch of 4 texts at the longest length (32), fp32.
    expected = 2 * 32 * 4 * 32 * (34 + 5 * 2 * 32 / 32) * 4 / 2
    assert activation_bytes(2, 32, 2, 4, 32, 4, False) == int(expected)
    assert abs(plan.activation_gib_per_mini_batch - expected / 2**30) < 1e-4
    assert plan.warnings == [] and "gathered batch 32" in plan.text()
    plan.write(tmp_path)
    assert json.loads((tmp_path / "plan.json").read_text())["negatives_per_query_in_batch"] == 124


def test_near_duplicates_warn(compose) -> None:
    from trainer.build import build_encoder, build_objective
    from trainer.planner import duplicate_stats, make_plan

    rows = [ex(f"q{i}", f"article {i % 10}" + ("!" if i >= 10 else "")) for i in range(20)]
    # 20 rows, positives "article k" and "Article k!" are near copies in pairs: each row has 1 near partner.
    near, per_query = duplicate_stats(rows, gathered=8)
    assert near == 20 and abs(per_query - 7 / 19) < 1e-9
    exact = [ex(f"q{i}", f"article {i % 10}") for i in range(20)]
    assert duplicate_stats(exact, 8) == (0, 0.0)  # exact copies: kept apart by the sampler, masked by the loss
    cfg = compose("train.batch_size=8")
    plan = make_plan(cfg, build_objective(cfg, build_encoder(cfg.model)), rows, world_size=1)
    assert plan.warnings and "near-duplicate" in plan.warnings[0]
