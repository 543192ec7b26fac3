"""sts: rows ``{"sentence1": str, "sentence2": str, "score": number}``; Spearman/Pearson of cosine vs gold."""
from __future__ import annotations

from typing import Any, Mapping

from trainer.evaluation import metrics
from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.tasks import PairData, number_field, split_rows, text_field


def load(cfg: Mapping[str, Any]) -> PairData:
    path, rows = split_rows(cfg)
    return PairData([text_field(path, n, r, "sentence1") for n, r in rows],
                    [text_field(path, n, r, "sentence2") for n, r in rows],
                    [number_field(path, n, r, "score") for n, r in rows])


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, PairData)
    side = task.get("side", "query")
    return metrics.sts_scores(embed(data.sentences1, side), embed(data.sentences2, side), data.targets)


register(TaskKind("sts", "cosine_spearman", load, score))
