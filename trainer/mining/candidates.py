"""Stored search results of the mining stage: ``<cache_dir>/candidates/<key>.npz``.

    python -m trainer.mine ...      # a second run with other selection rules reads the stored result

Each file holds, per query, the top-k corpus ids and scores and the query's weakest-positive score. Its key covers
the embedding cache keys (model, prompts, precision), the corpus and the queries in order, the positives and the
index settings; a result searched to depth k serves any depth up to k (its first columns). Re-running the selection
with other rules (margins, a narrower rank window, sampling, a teacher) then costs neither encoding nor search.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from trainer.data.schema import Example
from trainer.encoding import stable_hash, text_keys
from trainer.mining.config import IndexConfig
from trainer.mining.select import QueryPositives

log = logging.getLogger(__name__)


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


@dataclass
class ExampleKeys:
    """Content ids of the examples, computed once: queries (plain and with their instruction), positives."""
    query: np.ndarray  # (Q,) the query text alone: a passage equal to it is the query's own text
    query_instructed: np.ndarray  # (Q,) the query with its instruction (what the query embedding depends on)
    pos: np.ndarray  # (P,) every positive of every example, example by example
    pos_offsets: np.ndarray  # (Q + 1,) example q's positives are pos[pos_offsets[q]:pos_offsets[q + 1]]
    group: np.ndarray  # (Q,) examples with the same query text share a group (and so their positives)

    @classmethod
    def of(cls, examples: Sequence[Example]) -> "ExampleKeys":
        query = text_keys([ex.query for ex in examples])
        instructions = [ex.instruction for ex in examples]
        instructed = query if all(i is None for i in instructions) else text_keys(
            [ex.query for ex in examples], instructions)
        pos = text_keys([t for ex in examples for t in ex.pos])
        offsets = np.concatenate([[0], np.cumsum([len(ex.pos) for ex in examples])])
        return cls(query, instructed, pos, offsets, np.unique(query, return_inverse=True)[1].reshape(-1))

    def positives(self) -> QueryPositives:
        """What each example never takes as a negative: the positives of every example with its query text."""
        return QueryPositives(self.positive_matrix(), self.group, np.repeat(self.group, np.diff(self.pos_offsets)),
                              self.pos)

    def positive_matrix(self) -> np.ndarray:
        """(Q, P) each example's own positive ids, padded with -2 (``trainer.mining.select.positive_matrix``)."""
        counts = np.diff(self.pos_offsets)
        matrix = np.full((len(counts), max(int(counts.max(initial=0)), 1)), -2, dtype=np.int64)
        rows = np.repeat(np.arange(len(counts)), counts)
        matrix[rows, np.arange(len(self.pos)) - self.pos_offsets[rows]] = self.pos
        return matrix


def candidates_key(embedding_keys: dict[str, str], examples: Sequence[Example], keys: ExampleKeys,
                   corpus_tids: np.ndarray, index_cfg: IndexConfig) -> str:
    """What a search result depends on: embeddings, corpus and queries in order, positives, index settings.

    Not k: a stored result serves any k up to its own (its first k columns).
    """
    # Settings that change no search result stay out (so a stored result serves ``auto`` and its concrete kind).
    ignored = ("search_batch", "exact_max_passages", "approximate", "recall_sample")
    index = {k_: v for k_, v in asdict(index_cfg).items() if k_ not in ignored}
    return stable_hash({"embeddings": embedding_keys, "corpus": _digest(corpus_tids),
                        "queries": _digest(keys.query_instructed), "tasks": stable_hash([ex.task for ex in examples]),
                        "positives": _digest(keys.pos), "positive_counts": _digest(keys.pos_offsets),
                        "index": index})[:32]


def load_candidates(path: Path, k: int) -> Optional[dict[str, Any]]:
    """The stored search result cut to its first ``k`` columns; None when absent or searched less deep."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if int(z["k"]) < k:
                return None
            found = {name: z[name] for name in z.files}
    except Exception as err:  # noqa: BLE001 - a damaged file is a cache miss: searched again and rewritten
        log.warning("%s: corrupt stored search result (%s: %s): searching again", path, type(err).__name__, err)
        return None
    found["scores"], found["ids"] = found["scores"][:, :k], found["ids"][:, :k]
    return found
