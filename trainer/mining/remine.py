"""Re-mining during training (ANCE-style): refresh every example's negatives with the current student.

    python -m trainer.train experiment=demo data.num_negatives=1 train.remine_every=200

Every ``train.remine_every`` optimizer steps the loop calls ``Reminer(encoder)``: the corpus (every passage of
the training data, frozen when training starts, so re-mined negatives never shrink it) is re-encoded with the
current weights (sharded over processes by ``encode_cached``; every rank gets the same array), the exact index
is rebuilt, and ``dataset.examples[i].neg`` is replaced by the new selection (default ``SelectConfig`` rules,
TopK-PercPos 0.95). An example for which nothing survives keeps its previous negatives (counted). Teacher
scores of replaced negatives no longer apply and are dropped for those rows. With ``data.num_workers > 0``
worker processes hold their own copy of the dataset: re-mining needs ``num_workers=0``.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from trainer.data.dataset import ContrastiveDataset
from trainer.mining.config import IndexConfig, SelectConfig
from trainer.mining.pipeline import default_corpus, mine_negatives
from trainer.models.encoder import Encoder


class Reminer:
    def __init__(self, dataset: ContrastiveDataset, select: Optional[SelectConfig] = None,
                 index: Optional[IndexConfig] = None, batch_size: int = 64) -> None:
        self.dataset = dataset
        self.corpus = default_corpus(dataset.examples)
        self.select = select or SelectConfig(num_negatives=max(7, dataset.num_negatives))
        self.index = index or IndexConfig()
        self.batch_size = batch_size

    def __call__(self, encoder: Encoder) -> dict[str, Any]:
        started = time.perf_counter()
        examples = self.dataset.examples
        res = mine_negatives(encoder, examples, self.corpus, self.index, self.select, cache_root=None,
                             batch_size=self.batch_size)
        kept_old = 0
        for ex, negs in zip(examples, res.negatives):
            if not negs:
                kept_old += 1
                continue
            ex.neg = list(negs)
            if ex.neg_scores is not None:
                ex.pos_scores, ex.neg_scores = None, None
        return {"remine_selected": res.counts.get("selected", 0), "remine_kept_old": kept_old,
                "remine_positive_retrieved": res.counts.get("positive", 0),
                "remine_seconds": time.perf_counter() - started}


def build_remine(cfg: Any, dataset: Optional[ContrastiveDataset]) -> Optional[Reminer]:
    """A ``Reminer`` when ``train.remine_every`` is set (needs hard negatives and in-process data loading)."""
    if not cfg.train.get("remine_every"):
        return None
    if not isinstance(dataset, ContrastiveDataset):
        raise ValueError("train.remine_every needs the in-memory training data (not data.streaming)")
    if cfg.data.num_negatives <= 0:
        raise ValueError("train.remine_every needs data.num_negatives > 0 (re-mined negatives are drawn from)")
    if cfg.data.get("num_workers", 0):
        raise ValueError("train.remine_every needs data.num_workers=0 (workers hold a copy of the dataset)")
    return Reminer(dataset, batch_size=cfg.eval.get("batch_size", 64))
