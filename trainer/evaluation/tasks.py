"""Task data and the row readers every evaluation kind shares, validated (errors name ``file:line: field: problem``).

    python data/prepare_eval.py             # writes the bundled task files under data/build/eval/
    python -m trainer.evaluate checkpoint=PATH eval=suite

Each kind reads its file in ``trainer/evaluation/kinds/<kind>.py``. One JSONL file per task (retrieval uses a
BEIR folder instead). A row's optional ``split`` field selects
the rows of ``task.split``; a file without ``split`` fields is one split. Classification needs a ``split`` on
every row: it fits on the ``task.train_split`` rows and scores the ``task.split`` rows, never the same ones.

| kind                | row                                                              |
|---------------------|------------------------------------------------------------------|
| retrieval           | BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv      |
| sts                 | {"sentence1": str, "sentence2": str, "score": number}            |
| pair_classification | {"sentence1": str, "sentence2": str, "label": 0 or 1}            |
| classification      | {"text": str, "label": str or int, "split": "train" or "test"}   |
| clustering          | {"text": str, "label": str or int}                               |
| reranking           | {"query": str, "positive": [str, ...], "negative": [str, ...]}   |
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from trainer.encoding import stable_hash
from trainer.evaluation.retrieval import RetrievalData
from trainer.io import SAFE_NAME, read_jsonl

@dataclass
class PairData:
    """sts (``targets`` = gold scores) and pair_classification (``targets`` = 0/1 labels)."""
    sentences1: list[str]
    sentences2: list[str]
    targets: list[float]


@dataclass
class LabelledData:
    """classification (train_* filled) and clustering (train_* empty)."""
    texts: list[str]
    labels: list[str]
    train_texts: list[str]
    train_labels: list[str]


@dataclass
class RerankingData:
    queries: list[str]
    candidates: list[list[str]]
    relevant: list[list[int]]  # 0/1 per candidate


TaskData = Union[RetrievalData, PairData, LabelledData, RerankingData]


class TaskFileError(ValueError):
    pass


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: task file missing (bundled tasks: python data/prepare_eval.py)")
    rows = list(read_jsonl(path, TaskFileError))
    bad = next((n for n, row in rows if not isinstance(row, dict)), None)
    if bad is not None:
        raise TaskFileError(f"{path}:{bad}: row: expected a JSON object")
    return rows


def text_field(path: Path, line: int, row: Mapping[str, Any], field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise TaskFileError(f"{path}:{line}: {field}: expected a non-empty string, got {value!r}")
    return value


def number_field(path: Path, line: int, row: Mapping[str, Any], field: str) -> float:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskFileError(f"{path}:{line}: {field}: expected a finite number, got {value!r}")
    return float(value)


def label_field(path: Path, line: int, row: Mapping[str, Any]) -> str:
    value = row.get("label")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise TaskFileError(f"{path}:{line}: label: expected a string or integer, got {value!r}")
    return str(value)


def texts_field(path: Path, line: int, row: Mapping[str, Any], field: str, allow_empty: bool) -> list[str]:
    value = row.get(field, [] if allow_empty else None)
    if not isinstance(value, list) or (not value and not allow_empty):
        raise TaskFileError(f"{path}:{line}: {field}: expected a {'' if allow_empty else 'non-empty '}list of strings")
    return [text_field(path, line, {field: v}, field) for v in value]


def select_split(rows: list[tuple[int, dict[str, Any]]], split: str) -> list[tuple[int, dict[str, Any]]]:
    return [(n, r) for n, r in rows if r.get("split", split) == split]


def split_rows(cfg: Mapping[str, Any]) -> tuple[Path, list[tuple[int, dict[str, Any]]]]:
    """(path, rows of ``cfg.split``, at most ``cfg.max_queries``) of a one-file task; none is an error."""
    path, split = Path(cfg["path"]), cfg.get("split", "test")
    rows = select_split(read_rows(path), split)
    rows = rows[:cfg["max_queries"]] if cfg.get("max_queries") else rows
    if not rows:
        raise TaskFileError(f"{path}: no rows for split {split!r}")
    return path, rows


def classification_splits(path: Path, rows: list[tuple[int, dict[str, Any]]], split: str, train_split: str,
                          ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    """(scored rows, fitting rows): disjoint, so the classifier is never scored on the rows it was fitted on."""
    if split == train_split:
        raise TaskFileError(f"{path}: split and train_split are both {split!r}: the classifier would be scored on "
                            "the rows it was fitted on; give the task a train_split different from its split")
    unmarked = next((n for n, r in rows if "split" not in r), None)
    if unmarked is not None:
        raise TaskFileError(f"{path}:{unmarked}: split: missing; a classification file marks every row "
                            f"{train_split!r} (fits the classifier) or {split!r} (scores it), else a row would be "
                            "in both")
    train = [(n, r) for n, r in rows if r["split"] == train_split]
    if not train:
        raise TaskFileError(f"{path}: no rows with split={train_split!r} to fit the classifier")
    return [(n, r) for n, r in rows if r["split"] == split], train


# A task's results are <out>/<name>.json and its plot plots/<name>.png: a name is a plain file name, one per task.
SUITE_FILE = "suite_average.json"  # beside the task results: the mean of main scores, overall and per kind
# model_meta.json and suite_average.json beside results; leaderboard columns
RESERVED_NAMES = ("model_meta", "suite_average", "run", "checkpoint", "step")


def check_task_names(tasks: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a task name that is no plain file name, is reserved, or is another task's name (ignoring case, as
    some file systems do: one name, one file)."""
    seen: dict[str, str] = {}
    for task in tasks:
        name = task.get("name")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise ValueError(f"eval task {name!r}: name: use letters, digits, '.', '_' and '-' (first a letter or "
                             "digit, at most 100): it names the task's result file <name>.json and plot <name>.png")
        if name.lower() in RESERVED_NAMES:
            raise ValueError(f"eval task {name!r}: name: reserved ({', '.join(RESERVED_NAMES)}): pick another")
        if name.lower() in seen:
            raise ValueError(f"eval task {name!r}: name: task {seen[name.lower()]!r} has it too (ignoring case): "
                             "each task needs its own name")
        seen[name.lower()] = name


def check_task_paths(tasks: Sequence[Mapping[str, Any]]) -> None:
    """Every task's ``path`` exists (checked before a run is watched, so a typo stops it at once)."""
    missing = [f"eval task {t['name']!r}: path={t['path']}: no such file or folder" for t in tasks
               if not Path(t["path"]).exists()]
    if missing:
        raise FileNotFoundError("; ".join(missing) + " (bundled tasks: python data/prepare_eval.py)")


def task_fingerprint(task: Mapping[str, Any]) -> str:
    """What a task's result depends on: its settings and its data's ``fingerprint`` (None while the path is missing).

    Unset settings (None, False) are left out, so a new option that is off by default keeps earlier results valid.
    """
    settings = {k: v for k, v in task.items() if v is not None and v is not False}
    try:
        data: Optional[str] = fingerprint(task["path"])
    except OSError:
        data = None
    return stable_hash({"task": settings, "data": data})[:16]


_FINGERPRINTS: dict[tuple[Any, ...], str] = {}  # (path, each file's size and mtime) -> fingerprint


def fingerprint(path: str | Path) -> str:
    """sha256 (16 hex) of a task file, or of every file in a BEIR folder: the result's ``dataset_revision``.

    Remembered per (file, size, mtime) in this process: a watcher asks for it at every poll.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = (str(path.resolve()), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp in _FINGERPRINTS:
        return _FINGERPRINTS[stamp]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    _FINGERPRINTS[stamp] = h.hexdigest()[:16]
    return _FINGERPRINTS[stamp]
