"""Rows sharing a query text: every positive of the query text is a positive of each row, in the batch plan,
in the loss's masking and in re-mining.

    pytest tests/test_same_query.py
"""
from __future__ import annotations

from pathlib import Path

import torch

from trainer.data.dataset import Collator, ContrastiveDataset, UniqueBatchSampler, text_id
from trainer.data.schema import Example
from trainer.losses.infonce import InfoNCE


def family_examples() -> list[Example]:
    """Pairs datasets: one row per (query, positive), so "what is x" has two rows."""
    rows = [Example(query="what is x", pos=["x is A"]), Example(query="what is x", pos=["x is B"])]
    return rows + [Example(query=f"query {i}", pos=[f"passage {i}"]) for i in range(14)]


def test_rows_sharing_a_query_text_never_share_a_batch() -> None:
    dataset = ContrastiveDataset(family_examples(), seed=0)
    assert dataset.batch_keys(0, 0) >= {"x is A", "x is B"}
    for seed in range(6):
        sampler = UniqueBatchSampler(dataset, batch_size=8, seed=seed)
        for batch in sampler.global_batches(0):
            assert not {0, 1} <= set(batch), (seed, batch)


def test_the_loss_masks_positives_of_the_same_query_text() -> None:
    """Row 0's positive text is row 1's positive and vice versa: neither is a negative of the other."""
    dataset = ContrastiveDataset(family_examples()[:4], seed=0)
    batch = Collator(lambda texts, side, **_: {})([dataset[i] for i in range(4)])
    assert batch.positive_ids[0].tolist() == [text_id("x is A"), text_id("x is B")]
    gen = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    loss = InfoNCE(temperature=0.1, symmetric=True)
    masked = loss(query, passages, batch.passage_ids, positive_ids=batch.positive_ids,
                  query_ids=batch.query_ids)
    # Reference: the same scores with row 0/1's positives taken out of each other's candidates.
    scores = query @ passages.T / 0.1  # (4, 4)
    scores[0, 1] = scores[1, 0] = float("-inf")
    p2q = passages @ query.T / 0.1  # queries 0 and 1 are one text: neither is the other's negative
    p2q[0, 1] = p2q[1, 0] = float("-inf")
    labels = torch.arange(4)
    expected = (torch.nn.functional.cross_entropy(scores, labels) + torch.nn.functional.cross_entropy(p2q, labels)) / 2
    assert abs(float(masked) - float(expected)) < 1e-6
    assert abs(float(loss(query, passages, batch.passage_ids)) - float(expected)) > 1e-3  # the mask matters


def test_remining_excludes_positives_of_rows_with_the_same_query(tiny_model: Path) -> None:
    from trainer.mining.config import SelectConfig
    from trainer.mining.remine import Reminer
    from trainer.models import Encoder, EncoderSpec

    examples = [Example(query="w1 w2 w3", pos=["w1 w2 w3 w4"], neg=["w50 w51"]),
                Example(query="w1 w2 w3", pos=["w1 w2 w3 w5"], neg=["w52 w53"])]
    examples += [Example(query=f"w{10 + i} w{30 + i}", pos=[f"w{10 + i} w{60 + i} w{90 + i}"],
                         neg=[f"w{120 + i} w{140 + i}"]) for i in range(8)]
    dataset = ContrastiveDataset(examples, num_negatives=1)
    # Every candidate survives the rules (no score threshold, a window over the whole corpus).
    reminer = Reminer(dataset, SelectConfig(num_negatives=30, max_rank=30, relative=None))
    reminer(Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=16)))
    assert examples[0].neg and examples[1].neg
    assert "w1 w2 w3 w5" not in examples[0].neg and "w1 w2 w3 w4" not in examples[1].neg
    assert "w52 w53" in examples[0].neg  # the other row's negatives stay fair game
