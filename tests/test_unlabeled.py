"""Unlabeled-text distillation: the structure KL against hand-computed values, the seeded per-step draw, bad files
named by line and field, and the real loop (teacher cache, ``unlabeled_kl`` logged and falling, exact resume).

    pytest tests/test_unlabeled.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from trainer.data.schema import DataError
from trainer.losses.structure_kl import StructureKL
from trainer.teachers.unlabeled import UnlabeledTexts, read_texts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_structure_kl_matches_hand_computed_value() -> None:
    # Three texts; each one's candidates are the other two (the diagonal is masked).
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, 0.8]])
    s = [[0.0, 0.6], [0.0, 0.8], [0.6, 0.8]]  # student dot products of text i with its two candidates
    t = [[0.0, 0.0], [0.0, 0.6], [0.0, 0.6]]
    want = 0.0
    for si, ti in zip(s, t):
        q = [math.exp(x / 0.5) for x in si]
        p = [math.exp(x / 0.25) for x in ti]
        q, p = [x / sum(q) for x in q], [x / sum(p) for x in p]
        want += sum(pj * math.log(pj / qj) for pj, qj in zip(p, q)) / 3
    got = StructureKL(student_temperature=0.5, teacher_temperature=0.25, t2_scaling=False)(student, teacher)
    assert abs(float(got) - want) < 1e-6


def test_structure_kl_is_zero_with_zero_gradient_on_the_teacher_s_own_geometry() -> None:
    emb = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    student = emb.clone().requires_grad_(True)
    loss = StructureKL(0.05, 0.05, False)(student, emb)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-6 and float(student.grad.abs().max()) < 1e-5


def test_read_texts_names_file_line_and_field(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": f"t{i}"} for i in range(10)] + [{"text": "t1"}])
    assert read_texts(good, None, 0) == [f"t{i}" for i in range(10)]  # distinct, in file order
    sample = read_texts(good, 4, 0)
    assert len(sample) == 4 and sample == read_texts(good, 4, 0) and set(sample) < {f"t{i}" for i in range(10)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'text'"):
        read_texts(bad, None, 0)
    bad.write_text('{"text": "a"}\n\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: not JSON"):
        read_texts(bad, None, 0)


def test_a_step_s_texts_come_from_one_source_and_depend_only_on_its_rows() -> None:
    sources = {"a": [f"a{i}" for i in range(50)], "b": [f"b{i}" for i in range(50)]}
    emb = {k: np.arange(len(v) * 2, dtype=np.float32).reshape(-1, 2) for k, v in sources.items()}
    texts = UnlabeledTexts(sources, emb, batch_size=8, seed=3)
    first, teacher = texts.draw([4, 9, 17])
    assert len(set(first)) == 8 and len({t[0] for t in first}) == 1  # distinct texts, one source
    rows = [int(t[1:]) for t in first]
    assert np.array_equal(teacher, emb[first[0][0]][rows])  # each text with its own teacher embedding
    assert texts.draw([4, 9, 17])[0] == first  # resume draws the same
    draws = {tuple(texts.draw([i, i + 1])[0]) for i in range(20)}
    assert len(draws) == 20 and {d[0][0] for d in draws} == {"a", "b"}


def test_unlabeled_distillation_through_the_loop_resumes_exactly(compose, tmp_path: Path) -> None:
    from conftest import build_tiny_model
    from trainer.loop import train

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    rng = np.random.default_rng(0)
    files = [write_jsonl(tmp_path / f"{name}.jsonl",
                         [{"text": " ".join(f"{name}{rng.integers(40)}" for _ in range(6))} for _ in range(60)])
             for name in ("news", "tweets")]
    recipe = ["teacher=mpnet", f"teacher.name_or_path={teacher_dir}", "distill=kl", "train.max_steps=12",
              f"distill.unlabeled.files=[{files[0]},{files[1]}]", "distill.unlabeled.batch_size=16",
              "distill.unlabeled.weight=2.0", "loss.weight=0.0", "distill.listwise_kl.weight=0.0",
              "optim.lr=3e-3", "optim.warmup_ratio=0.0", "logger.every_n_steps=1", "eval.tasks=[]",
              "train.save_every_n_steps=6", "train.keep_last=0"]
    train(compose(*recipe, "name=reference"))
    want = [json.loads(line) for line in (tmp_path / "runs" / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert all("unlabeled_kl" in r for r in want)
    assert np.mean([r["unlabeled_kl"] for r in want[-4:]]) < 0.7 * np.mean([r["unlabeled_kl"] for r in want[:4]])
    train(compose(*recipe, "name=victim", "train.stop_after_steps=6"))
    train(compose(*recipe, "name=victim", "resume=auto"))
    got = [json.loads(line) for line in (tmp_path / "runs" / "victim" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 13))
    for a, b in zip(got, want):
        assert abs(a["unlabeled_kl"] - b["unlabeled_kl"]) <= 1e-6 and abs(a["loss"] - b["loss"]) <= 1e-6


def test_unlabeled_distillation_refuses_gradcache_and_tiny_batches(compose, tmp_path: Path) -> None:
    from trainer.loop import train

    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": "x"}, {"text": "y"}])
    base = ["teacher=mpnet", "distill=kl", f"distill.unlabeled.files=[{texts}]"]
    with pytest.raises(ValueError, match="GradCache"):
        train(compose(*base, "train.mini_batch_size=4"))
    with pytest.raises(ValueError, match=r"distill.unlabeled.batch_size=1: must be >= 2"):
        train(compose(*base, "distill.unlabeled.batch_size=1"))
