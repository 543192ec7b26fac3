"""data.source_weights: each source's share of every epoch (E5/BGE mixtures), up- and down-sampled per epoch."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_rows, write_jsonl
from trainer.data.dataset import ContrastiveDataset, UniqueBatchSampler
from trainer.data.mixture import Mixture
from trainer.data.schema import Example


def test_shares_follow_the_weights_and_add_up_to_the_loaded_rows() -> None:
    mixture = Mixture.from_weights([1, 1, 2], [("a", 90), ("b", 10), ("c", 1)])
    assert mixture.shares == (25, 25, 51)  # 101 rows: 25.25 / 25.25 / 50.5 -> largest remainder to c
    assert mixture.spans == ((0, 90), (90, 100), (100, 101))
    rows = mixture.indices(seed=0, epoch=0)
    by_source = Counter(0 if i < 90 else 1 if i < 100 else 2 for i in rows)
    assert by_source == {0: 25, 1: 25, 2: 51}
    assert len(set(i for i in rows if i < 90)) == 25  # down-sampled: distinct rows
    b = Counter(i for i in rows if 90 <= i < 100)
    assert sorted(b.values()) == [2] * 5 + [3] * 5  # up-sampled: whole passes, then part of one
    assert rows == mixture.indices(seed=0, epoch=0) and rows != mixture.indices(seed=0, epoch=1)
    assert "a 25 (0.28x its 90 rows), b 25 (2.50x its 10 rows), c 51 (51.00x its 1 rows)" in mixture.describe()


@pytest.mark.parametrize("weights, sources, message", [
    ([1], [("a", 3), ("b", 3)], "1 entries for 2 data.train_files"),
    ([1, -1], [("a", 3), ("b", 3)], "each weight must be >= 0"),
    ([0, 0], [("a", 3), ("b", 3)], "at least one > 0"),
    ([1, 1], [("a", 3), ("b", 0)], "gives b a share, but no row of it was loaded"),
    ([1, 1], [("a", 3)], "gives b a share"),  # data.max_rows stopped before the second source
])
def test_bad_weights_are_refused(weights: list[float], sources: list[tuple[str, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mixture.from_weights(weights, sources, ["a", "b"])


def test_the_sampler_draws_each_epoch_from_the_mixture() -> None:
    examples = [Example(query=f"a{i}", pos=[f"pa{i}"]) for i in range(400)] + \
               [Example(query=f"b{i}", pos=[f"pb{i}"]) for i in range(80)]
    mixture = Mixture.from_weights([1, 1], [("a", 400), ("b", 80)])
    sampler = UniqueBatchSampler(ContrastiveDataset(examples, seed=3, mixture=mixture), batch_size=8, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        seen = Counter(examples[i].query[0] for batch in sampler for i in batch)
        # 480 rows an epoch, half from the 80-row source (each of its rows 3 times); a row that clashes with every
        # open batch (its own copy) or ends in an incomplete batch is left out, and counted as dropped.
        assert sum(seen.values()) == 480 - sampler.dropped_in(epoch) and sampler.dropped_in(epoch) <= 16
        assert abs(seen["a"] - 240) <= 16 and abs(seen["b"] - 240) <= 16
        for batch in sampler:
            assert len({examples[i].query for i in batch}) == len(batch)  # a repeated row never twice in a batch
    plain = UniqueBatchSampler(ContrastiveDataset(examples, seed=3), batch_size=8, seed=3)
    assert Counter(examples[i].query[0] for batch in plain for i in batch) == {"a": 400, "b": 80}


def test_a_weighted_mixture_trains_and_resumes_exactly(compose, tmp_path: Path) -> None:
    from trainer.loop import train

    big = write_jsonl(tmp_path / "big.jsonl", make_rows(80, seed=5))
    small = write_jsonl(tmp_path / "small.jsonl", make_rows(16, seed=6))
    recipe = [f"data.train_files=[{big},{small}]", "data.source_weights=[1,1]", "train.max_steps=8",
              "logger.every_n_steps=1", "eval.tasks=[]", "train.save_every_n_steps=4", "train.keep_last=0"]
    train(compose(*recipe, "name=reference"))
    log = (tmp_path / "runs" / "reference" / "train.log").read_text()
    assert f"mixture per epoch: {big} 48 (0.60x its 80 rows), {small} 48 (3.00x its 16 rows)" in log
    want = [json.loads(line) for line in (tmp_path / "runs" / "reference" / "metrics.jsonl").read_text().splitlines()]
    train(compose(*recipe, "name=victim", "train.stop_after_steps=4"))
    train(compose(*recipe, "name=victim", "resume=auto"))
    got = [json.loads(line) for line in (tmp_path / "runs" / "victim" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == list(range(1, 9))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-6)
