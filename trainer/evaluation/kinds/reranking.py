"""reranking: rows ``{"query": str, "positive": [str, ...], "negative": [str, ...]}``; MAP and MRR@10 of each
query's candidates ranked by cosine."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trainer.evaluation import metrics
from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.tasks import RerankingData, split_rows, text_field, texts_field


def load(cfg: Mapping[str, Any]) -> RerankingData:
    path, rows = split_rows(cfg)
    queries, candidates, relevant = [], [], []
    for n, r in rows:
        pos = texts_field(path, n, r, "positive", allow_empty=False)
        neg = texts_field(path, n, r, "negative", allow_empty=True)
        queries.append(text_field(path, n, r, "query"))
        candidates.append(pos + neg)
        relevant.append([1] * len(pos) + [0] * len(neg))
    return RerankingData(queries, candidates, relevant)


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, RerankingData)
    flat = [text for cands in data.candidates for text in cands]
    flat_emb = embed(flat, "passage")  # (sum C_q, D)
    bounds = np.cumsum([0] + [len(c) for c in data.candidates])
    return metrics.reranking_scores(embed(data.queries, "query"), [flat_emb[a:b] for a, b in zip(bounds, bounds[1:])],
                                    [np.asarray(r) for r in data.relevant])


register(TaskKind("reranking", "map", load, score))
