"""classification: rows ``{"text": str, "label": str or int, "split": str}``; a logistic regression fitted on the
``train_split`` rows, scored (accuracy, F1) on the ``split`` rows: never the same ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trainer.evaluation import metrics
from trainer.evaluation.kinds import Embed, TaskKind, register
from trainer.evaluation.tasks import (LabelledData, TaskFileError, classification_splits, label_field, read_rows,
                                      text_field)


def load(cfg: Mapping[str, Any]) -> LabelledData:
    path, split = Path(cfg["path"]), cfg.get("split", "test")
    rows, train = classification_splits(path, read_rows(path), split, cfg.get("train_split", "train"))
    rows = rows[:cfg["max_queries"]] if cfg.get("max_queries") else rows
    if not rows:
        raise TaskFileError(f"{path}: no rows for split {split!r}")
    return LabelledData([text_field(path, n, r, "text") for n, r in rows], [label_field(path, n, r) for n, r in rows],
                        [text_field(path, n, r, "text") for n, r in train], [label_field(path, n, r) for n, r in train])


def score(task: Mapping[str, Any], data: Any, embed: Embed) -> dict[str, float]:
    assert isinstance(data, LabelledData)
    side = task.get("side", "query")
    return metrics.classification_scores(embed(data.train_texts, side), data.train_labels,
                                         embed(data.texts, side), data.labels)


register(TaskKind("classification", "accuracy", load, score))
