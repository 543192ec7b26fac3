"""pair_classification: rows ``{"sentence1": str, "sentence2": str, "label": 0 or 1}``; AP of cosine, F1."""
from __future__ import annotations

from typing import Any, Mapping

from trainer.evaluation import metrics
from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.tasks import PairData, TaskFileError, number_field, split_rows, text_field


def load(cfg: Mapping[str, Any]) -> PairData:
    path, rows = split_rows(cfg)
    targets = [number_field(path, n, r, "label") for n, r in rows]
    bad = next((n for (n, _), t in zip(rows, targets) if t not in (0.0, 1.0)), None)
    if bad is not None:
        raise TaskFileError(f"{path}:{bad}: label: expected 0 or 1")
    return PairData([text_field(path, n, r, "sentence1") for n, r in rows],
                    [text_field(path, n, r, "sentence2") for n, r in rows], targets)


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, PairData)
    side = task.get("side", "query")
    return metrics.pair_classification_scores(embed(data.sentences1, side), embed(data.sentences2, side),
                                              [int(t) for t in data.targets])


register(TaskKind("pair_classification", "cosine_ap", load, score))
