"""Evaluation task kinds: one file per kind (how its data is read, how it is scored, its main score), by name.

    python -c "from trainer.evaluation.kinds import kind_names; print(kind_names())"

A kind is a module here that calls ``register(TaskKind(...))`` on import; every module of this package is
imported when a kind is first looked up, so a new kind is one new file (plus the YAML of a task that uses it, e.g.
``conf/eval/<name>.yaml``) and no other edit. Every evaluator (the training loop, the watcher, the CLI, export's
int8 check, domain adaptation, sweeps) reads data with ``load_task``, scores with ``score_task`` and names the
main score with ``main_score_name``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from trainer.evaluation.tasks import TaskData

# embed(texts, side) -> (n, D) float32 embeddings; side is "query" or "passage".
Embed = Callable[[Sequence[str], str], np.ndarray]
# The schema's default main_score: on a kind other than retrieval it stands for that kind's own main score.
DEFAULT_MAIN_SCORE = "ndcg_at_10"


@dataclass(frozen=True)
class TaskKind:
    """One evaluation kind.

    Attributes:
        name: the ``kind`` a task config names.
        main_score: the score reported as ``main_score`` unless the task names another.
        load: task config (``EvalTaskConfig`` or a mapping) -> the task's data; errors name ``path:line: field``.
        score: (task config, data, embed) -> ``{score name: value}``; must contain ``main_score``.
    """
    name: str
    main_score: str
    load: Callable[[Mapping[str, Any]], TaskData]
    score: Callable[[Mapping[str, Any], TaskData, Embed], dict[str, float]]


_KINDS: dict[str, TaskKind] = {}
_discovered = False


def register(kind: TaskKind) -> TaskKind:
    """Add ``kind`` (a module of this package calls this on import; a test may call it with a toy kind)."""
    _KINDS[kind.name] = kind
    return kind


def _discover() -> None:
    global _discovered
    if not _discovered:
        _discovered = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def kind_names() -> tuple[str, ...]:
    _discover()
    return tuple(_KINDS)


def get_kind(name: str, task_name: Any = None) -> TaskKind:
    """The registered kind ``name``; a ValueError names the task and the known kinds otherwise."""
    _discover()
    if name not in _KINDS:
        raise ValueError(f"eval task {task_name}: kind must be one of {kind_names()}, got {name!r}")
    return _KINDS[name]


def load_task(cfg: Mapping[str, Any]) -> TaskData:
    """Read the data of one task config (its ``kind``, ``path``, ``split``, ``max_queries``, kind options)."""
    return get_kind(cfg["kind"], cfg.get("name")).load(cfg)


def score_task(task: Mapping[str, Any], data: TaskData, embed: Embed) -> dict[str, float]:
    """Embed the task's texts and compute its kind's scores."""
    return get_kind(task["kind"], task.get("name")).score(task, data, embed)


def encoder_embed(encoder: Any, task: Mapping[str, Any], batch_size: int = 64,
                  autocast_dtype: Optional[Any] = None) -> Embed:
    """``Embed`` by ``encoder.encode`` (an ``Encoder`` or anything with its signature, e.g. an ONNX encoder): the
    encoder's own prompts, the task's instruction on the query side; ``autocast_dtype`` as ``Encoder.encode``."""
    extra = {} if autocast_dtype is None else {"autocast_dtype": autocast_dtype}

    def embed(texts: Sequence[str], side: str) -> np.ndarray:
        return encoder.encode(list(texts), side=side, batch_size=batch_size,
                              task=task.get("task") if side == "query" else None, **extra)
    return embed


def main_score_name(task: Mapping[str, Any]) -> str:
    """The task's ``main_score``; unset or the schema's default, the kind's own main score."""
    name = task.get("main_score") or DEFAULT_MAIN_SCORE
    return get_kind(task["kind"], task.get("name")).main_score if name == DEFAULT_MAIN_SCORE else name


def main_metric(task: Mapping[str, Any]) -> str:
    """``<task name>/<main score>``: the key of a task's main score in ``eval.jsonl``, sweeps and reports."""
    return f"{task['name']}/{main_score_name(task)}"
