"""retrieval: a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); nDCG@10, MRR, recall, MAP."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.retrieval import RetrievalData, evaluate_retrieval, load_beir


def load(cfg: Mapping[str, Any]) -> RetrievalData:
    return load_beir(Path(cfg["path"]), cfg.get("split", "test"), cfg.get("max_queries"),
                     bool(cfg.get("ignore_identical_ids", False)))


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, RetrievalData)
    return evaluate_retrieval(None, data, embed=embed)  # type: ignore[arg-type]


register(TaskKind("retrieval", "ndcg_at_10", load, score))
