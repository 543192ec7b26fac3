"""Evaluation under faults and bad input: no scoring on training rows, retries of what failed or changed, safe task
names, messages that name the file and line.

    pytest -q tests/test_eval_faults.py
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import write_jsonl
from trainer.evaluation.tasks import TaskFileError, load_task


def test_classification_never_scores_its_training_rows(tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = [{"text": f"w{i} w{i + 1}", "label": rng.choice("ab")} for i in range(40)]  # random labels
    unmarked = write_jsonl(tmp_path / "cls.jsonl", rows)  # no split: every row would be fitted on and scored
    with pytest.raises(TaskFileError, match=r"cls.jsonl:1: split: missing"):
        load_task({"name": "c", "kind": "classification", "path": str(unmarked)})
    partly = write_jsonl(tmp_path / "partly.jsonl", [{**r, "split": "train"} for r in rows[:30]] + rows[30:])
    with pytest.raises(TaskFileError, match=r"partly.jsonl:31: split: missing"):
        load_task({"name": "c", "kind": "classification", "path": str(partly)})
    marked = write_jsonl(tmp_path / "marked.jsonl", [{**r, "split": "train" if i % 2 else "test"}
                                                     for i, r in enumerate(rows)])
    with pytest.raises(TaskFileError, match=r"marked.jsonl: split and train_split are both 'test'"):
        load_task({"name": "c", "kind": "classification", "path": str(marked), "train_split": "test"})
    data = load_task({"name": "c", "kind": "classification", "path": str(marked)})
    assert len(data.texts) == len(data.train_texts) == 20 and not set(data.texts) & set(data.train_texts)
    clustering = load_task({"name": "c", "kind": "clustering", "path": str(unmarked)})  # one split: fine there
    assert len(clustering.texts) == 40
