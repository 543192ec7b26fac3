"""Re-mining during training (ANCE-style): refresh every example's negatives with the current student.

    python -m trainer.train experiment=demo data.num_negatives=1 train.remine_every=200

Every ``train.remine_every`` optimizer steps the loop calls ``Reminer(encoder)``: the corpus (every passage of
the training data, frozen when training starts, so re-mined negatives never shrink it) is re-encoded with the
current weights (sharded over processes by ``encode_cached``; every rank gets the same array), the exact index
is rebuilt, and ``dataset.examples[i].neg`` is replaced by the new selection (default ``SelectConfig`` rules,
TopK-PercPos 0.95). Every positive of a row's query text (rows sharing a query text share their positives) is
excluded, as the row's own are. An example for which nothing survives keeps its previous negatives (counted).

Teacher scores: scores carried by the data (``pos_scores``/``neg_scores``) no longer apply to replaced rows and
are dropped for them, so re-mining is refused with a score-only teacher that cannot score new pairs
(``teacher=precomputed``); a cross-encoder teacher scores the new pairs (``rescore``). The negatives in use are
part of the resume state (``state_dict``: corpus positions, JSON), so a resumed run trains on exactly what the
uninterrupted one would. With ``data.num_workers > 0`` worker processes hold their own copy of the dataset:
re-mining needs ``num_workers=0``.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from typing import Any, Callable, Optional

from trainer.data.dataset import ContrastiveDataset
from trainer.data.schema import Example
from trainer.mining.config import IndexConfig, SelectConfig
from trainer.mining.pipeline import default_corpus, mine_negatives
from trainer.models.encoder import Encoder


class Reminer:
    def __init__(self, dataset: ContrastiveDataset, select: Optional[SelectConfig] = None,
                 index: Optional[IndexConfig] = None, batch_size: int = 64,
                 rescore: Optional[Callable[[list[Example]], None]] = None) -> None:
        self.dataset = dataset
        self.corpus = default_corpus(dataset.examples)
        self.position = {text: i for i, text in enumerate(self.corpus)}
        self.select = select or SelectConfig(num_negatives=max(7, dataset.num_negatives))
        self.index = index or IndexConfig()
        self.batch_size = batch_size
        self.rescore = rescore  # scores new (query, negative) pairs with the teacher, when there is one
        self.replaced: dict[int, list[int]] = {}  # example -> corpus positions of its re-mined negatives

    def queries(self) -> list[Example]:
        """The examples as the miner sees them: positives are every positive of the query text."""
        return [replace(ex, pos=list(pos), pos_scores=None, neg_scores=None)
                for ex, pos in zip(self.dataset.examples, self.dataset.positives)]

    def __call__(self, encoder: Encoder) -> dict[str, Any]:
        started = time.perf_counter()
        res = mine_negatives(encoder, self.queries(), self.corpus, self.index, self.select, cache_root=None,
                             batch_size=self.batch_size)
        kept_old = 0
        for i, (negs, positives) in enumerate(zip(res.negatives, self.dataset.positives)):
            negs = [t for t in negs if t not in positives]  # the selection excludes them; never train on one
            if not negs:
                kept_old += 1
                continue
            self._set(i, [self.position[t] for t in negs])
        if self.rescore is not None:
            self.rescore(self.dataset.examples)
        return {"remine_selected": res.counts.get("selected", 0), "remine_kept_old": kept_old,
                "remine_positive_retrieved": res.counts.get("positive", 0),
                "remine_seconds": time.perf_counter() - started}

    def _set(self, index: int, positions: list[int]) -> None:
        ex = self.dataset.examples[index]
        ex.neg = [self.corpus[p] for p in positions]
        ex.pos_scores, ex.neg_scores = None, None  # the data's teacher scores were for the old negatives
        self.replaced[index] = positions

    def corpus_digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for text in self.corpus:
            h.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        return h.hexdigest()

    def state_dict(self) -> dict[str, Any]:
        """The negatives in use, as corpus positions (JSON-able)."""
        return {"corpus": self.corpus_digest(), "rows": {str(i): p for i, p in sorted(self.replaced.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back the negatives of ``state_dict`` (before teacher targets are built: they cover them)."""
        if state["corpus"] != self.corpus_digest():
            raise ValueError("the re-mined negatives in the resume state index another corpus: the training data "
                             "changed since the state was saved")
        for index, positions in state["rows"].items():
            self._set(int(index), list(positions))


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
    from trainer.losses.registry import active_losses
    from trainer.teachers.kinds import is_kind

    teacher = cfg.get("teacher")
    scores_used = any(e.inputs == "scores" for e in active_losses(cfg.get("distill")).values())
    if is_kind(teacher, "precomputed") and scores_used:
        raise ValueError("train.remine_every with teacher=precomputed: re-mined negatives have no teacher scores "
                         "(the data's pos_scores/neg_scores cover only its own negatives) and a precomputed teacher "
                         "cannot score new pairs. Use a teacher that scores pairs (teacher=cross_encoder) or "
                         "embeds texts (teacher=mpnet), or mine offline with scores (python -m trainer.mine "
                         "mine/teacher=...) and train without train.remine_every.")
    return Reminer(dataset, batch_size=cfg.eval.get("batch_size", 64))
