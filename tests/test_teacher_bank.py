"""Asymmetric distillation over the teacher's passage bank (trainer/losses/teacher_bank.py): hand-computed values,
the candidates and masks a batch gets, the seeded bank draw, and a tiny aligned run whose student queries come to
search the teacher's passages better than before.

    pytest -q tests/test_teacher_bank.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data.batch import Batch
from trainer.losses.registry import Dims
from trainer.losses.teacher_bank import TeacherBankConfig, TeacherBankLoss, build_teacher_bank
from trainer.teachers.distill import bank_candidates
from trainer.teachers.targets import TeacherTargets


def test_bank_loss_matches_hand_computed_value() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (B=2, D=2) the student's
    teacher_query = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # the teacher's
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # (C=3, D)
    labels = torch.tensor([0, 1])
    loss = TeacherBankLoss(contrastive_weight=0.5, student_temperature=0.5, teacher_temperature=0.25)
    value = loss(query, teacher_query, candidates, labels)

    def softmax(xs: list[float]) -> list[float]:
        total = sum(math.exp(x) for x in xs)
        return [math.exp(x) / total for x in xs]

    expected = 0.0
    for s_row, t_row, label in (([1.0, 0.0, 0.6], [0.6, 0.8, 1.0], 0), ([0.0, 1.0, 0.8], [0.0, 1.0, 0.8], 1)):
        q = softmax([s / 0.5 for s in s_row])
        p = softmax([t / 0.25 for t in t_row])
        expected += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)) - 0.5 * math.log(q[label])
    assert value.item() == pytest.approx(expected / 2, rel=1e-5)


def test_masked_candidates_drop_out_and_the_gradient_reaches_the_query_only() -> None:
    query = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1).requires_grad_()
    teacher_query = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    candidates = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1).requires_grad_()
    labels = torch.tensor([0, 1])
    loss = TeacherBankLoss()
    mask = torch.tensor([[False, False, True], [False, False, True]])
    masked = loss(query, teacher_query, candidates, labels, mask)
    assert masked.item() == pytest.approx(loss(query, teacher_query, candidates[:2], labels).item(), rel=1e-6)
    masked.backward()
    assert query.grad is not None and query.grad.abs().sum() > 0 and candidates.grad is None
    # the student scoring like the teacher leaves no KL: only the positive's cross-entropy remains
    same = TeacherBankLoss(contrastive_weight=0.0)(teacher_query, teacher_query, candidates, labels)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_candidates_put_the_batch_first_and_mask_bank_copies_and_other_positives() -> None:
    # 2 queries x (positive + 1 negative); passage ids 10, 11 | 20, 10 (query 1's negative is query 0's positive)
    batch = Batch(query={}, passage={}, passage_ids=torch.tensor([10, 11, 20, 10]),
                  positive_ids=torch.tensor([[10, -1], [20, 21]]),
                  teacher_query=torch.randn(2, 3), teacher_passage=torch.randn(4, 3),
                  teacher_bank=torch.randn(3, 3), teacher_bank_ids=torch.tensor([11, 21, 30]))
    candidates, labels, mask = bank_candidates(batch, 2)
    assert candidates.shape == (7, 3) and torch.equal(candidates[4:], batch.teacher_bank)
    assert labels.tolist() == [0, 2]
    # columns: 10 11 20 10 | 11(copy of a batch passage) 21(query 1's other positive) 30
    assert mask.tolist() == [[False, False, False, True, True, False, False],
                             [False, False, False, False, True, True, False]]


def test_unlabeled_rows_add_the_kl_only_and_mask_only_bank_copies() -> None:
    torch.manual_seed(0)
    query, teacher_query = torch.randn(3, 4), torch.randn(3, 4)
    candidates = torch.randn(5, 4)
    loss = TeacherBankLoss(contrastive_weight=0.7)
    kl_only = TeacherBankLoss(contrastive_weight=0.0)
    both = loss(query, teacher_query, candidates, torch.tensor([0, 2, -100]))
    # KL over all three rows, cross-entropy over the two labelled ones
    expected = kl_only(query, teacher_query, candidates, torch.tensor([0, 2, -100])) + 0.7 * (
        torch.nn.functional.cross_entropy(query[:2] @ candidates.T / 0.05, torch.tensor([0, 2])))
    assert both.item() == pytest.approx(expected.item(), rel=1e-5)
    batch = Batch(query={}, passage={}, passage_ids=torch.tensor([10, 11]), positive_ids=torch.tensor([[10, 31]]),
                  teacher_query=torch.randn(1, 3), teacher_passage=torch.randn(2, 3),
                  teacher_bank=torch.randn(2, 3), teacher_bank_ids=torch.tensor([11, 31]))
    _, labels, mask = bank_candidates(batch, 1, unlabeled=2)
    assert labels.tolist() == [0, -100, -100]
    assert mask.tolist() == [[False, False, True, True], [False, False, True, False], [False, False, True, False]]


def test_the_bank_draw_is_seeded_by_the_batch_rows() -> None:
    targets = TeacherTargets(query_emb=np.zeros((4, 2), np.float32), passage_ids=np.arange(100, dtype=np.int64),
                             passage_emb=np.zeros((100, 2), np.float32))
    targets.bank_size, targets.bank_seed = 10, 3
    first = targets.draw_bank(np.array([0, 1]))
    assert len(first) == 10 and len(set(first.tolist())) == 10 and (np.diff(first) > 0).all()
    assert np.array_equal(first, targets.draw_bank(np.array([0, 1])))  # a resumed run draws the same
    assert not np.array_equal(first, targets.draw_bank(np.array([2, 3])))
    targets.bank_size = 500
    assert np.array_equal(targets.draw_bank(np.array([0, 1])), np.arange(100))  # small banks: every passage


def test_the_loss_needs_a_student_in_the_teachers_space() -> None:
    with pytest.raises(ValueError, match="distill.align=true"):
        build_teacher_bank(TeacherBankConfig(weight=1.0), Dims(32, 48, align=False))
    with pytest.raises(ValueError, match="bank_size must be >= 1"):
        build_teacher_bank(TeacherBankConfig(weight=1.0, bank_size=0), Dims(48, 48, align=True))


def _asymmetric_mrr(student: Path, teacher_dir: Path, rows: list[dict]) -> float:
    """Mean reciprocal rank of each row's positive among every row's positive, student queries over teacher passages."""
    from trainer.models.encoder import Encoder
    from trainer.teachers import BiEncoderTeacher

    queries = Encoder.from_pretrained(str(student)).encode([r["query"] for r in rows], side="query")  # (N, D_t)
    passages = BiEncoderTeacher(str(teacher_dir), max_length_passage=32, precision="float32").embed(
        [r["pos"][0] for r in rows], "passage")  # (N, D_t)
    scores = queries @ passages.T
    ranks = (scores > scores.diagonal()[:, None]).sum(1)  # (N,) how many passages beat the right one
    return float(np.mean(1.0 / (ranks + 1)))


def test_aligned_run_with_the_bank_serves_queries_against_the_teachers_passages(compose, tmp_path: Path) -> None:
    """Real loop: the bank part is logged, and the student's queries of the training rows find their passages among
    the teacher's better than after the same run without it (every other setting equal). Random tiny models: the
    teacher's ranking carries no meaning that would transfer to held-out rows, so the rows trained on are used."""
    from trainer.loop import train
    from conftest import build_tiny_model

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    common = ("teacher=mpnet", f"teacher.name_or_path={teacher_dir}", "distill=kl_embedding", "distill.align=true",
              "train.max_steps=16", "optim.lr=3e-3", "optim.warmup_ratio=0.0", "logger.every_n_steps=4",
              "eval.before_training=false")
    scores = {}
    for name, extra in (("plain", []), ("bank", ["distill.teacher_bank.weight=1.0"])):
        cfg = compose(*common, *extra, f"name={name}")
        train(cfg)
        run = Path(cfg.run_dir)
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert ("bank" in logged[0]) == (name == "bank")
        rows = [json.loads(line) for line in Path(cfg.data.train_files[0]).read_text().splitlines()]
        scores[name] = _asymmetric_mrr(sorted((run / "checkpoints").iterdir())[-1], teacher_dir, rows)
    assert scores["bank"] > scores["plain"]


def test_two_processes_with_gradcache_resume_to_the_uninterrupted_run(tiny_model: Path, tiny_data: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """torchrun, 2 processes, GradCache, a bank draw smaller than the bank (seeded per batch): stopping at step 2
    and resuming ends on the weights of the run that never stopped."""
    import subprocess

    from conftest import build_tiny_model
    from test_multiprocess import TORCHRUN
    from test_resume import ROOT, env, load_weights, metrics, train_command

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    runs = tmp_path / "runs"

    def launch(name: str, *extra: str) -> None:
        command = train_command(tiny_model, tiny_data["train"], runs, name, "teacher=mpnet",
                                f"teacher.name_or_path={teacher_dir}", f"teacher.cache_root={tmp_path / 'cache'}",
                                "distill=kl_embedding", "distill.align=true", "distill.teacher_bank.weight=1.0",
                                "distill.teacher_bank.bank_size=16", "train.batch_size=4", "data.num_negatives=1",
                                "train.max_steps=4", "train.save_every_n_steps=2", "train.mini_batch_size=3", *extra)
        done = subprocess.run(TORCHRUN + command[1:], env=env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    launch("straight")
    launch("stopped", "train.stop_after_steps=2")
    launch("stopped", "resume=auto")
    straight, resumed = metrics(runs / "straight"), metrics(runs / "stopped")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4] and all("bank" in r for r in resumed)
    assert [r["bank"] for r in resumed] == pytest.approx([r["bank"] for r in straight], rel=1e-5)
    final = load_weights(runs / "straight" / "state" / "step-000004")
    for name, value in load_weights(runs / "stopped" / "state" / "step-000004").items():
        torch.testing.assert_close(value, final[name], atol=1e-6, rtol=1e-5, msg=name)
