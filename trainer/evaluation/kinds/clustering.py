"""clustering: rows ``{"text": str, "label": str or int}``; k-means (k = number of labels), V-measure."""
from __future__ import annotations

from typing import Any, Mapping

from trainer.evaluation import metrics
from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.tasks import LabelledData, label_field, split_rows, text_field


def load(cfg: Mapping[str, Any]) -> LabelledData:
    path, rows = split_rows(cfg)
    return LabelledData([text_field(path, n, r, "text") for n, r in rows], [label_field(path, n, r) for n, r in rows],
                        [], [])


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, LabelledData)
    return metrics.clustering_scores(embed(data.texts, task.get("side", "query")), data.labels)


register(TaskKind("clustering", "v_measure", load, score))
