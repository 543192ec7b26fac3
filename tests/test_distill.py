"""Distillation losses against hand-computed values, candidate scores, projection, layer subsets, and a tiny
teacher distilled into a tiny student through the real loop (held-out KL goes down)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainer.data.batch import Batch
from trainer.losses.embedding_distill import EmbeddingDistill
from trainer.losses.listwise_kl import ListwiseKL
from trainer.losses.margin_mse import MarginMSE
from trainer.losses.similarity_distill import SimilarityDistill
from trainer.teachers.distill import candidate_scores


def _softmax(xs: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_kl_matches_hand_computed_value() -> None:
    s, t = [1.0, 2.0, 0.0], [0.0, 1.0, 2.0]
    ts, tt = 0.5, 2.0
    p, q = _softmax([x / tt for x in t]), _softmax([x / ts for x in s])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    plain = ListwiseKL(ts, tt, t2_scaling=False)(torch.tensor([s]), torch.tensor([t]))
    assert abs(plain.item() - expected) < 1e-6
    scaled = ListwiseKL(ts, tt, t2_scaling=True)(torch.tensor([s]), torch.tensor([t]))
    assert abs(scaled.item() - expected * ts ** 2) < 1e-6


def test_kl_masks_candidates_and_computes_in_float32() -> None:
    s = torch.tensor([[1.0, float("-inf"), 0.0]], dtype=torch.bfloat16)
    t = torch.tensor([[0.0, 5.0, 1.0]])
    p, q = _softmax([0.0, 1.0]), _softmax([1.0, 0.0])
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = ListwiseKL(1.0, 1.0, t2_scaling=False)(s, t)
    assert loss.dtype == torch.float32 and abs(loss.item() - expected) < 1e-6


@pytest.mark.parametrize("loss_fn", [ListwiseKL(0.05, 0.05), MarginMSE(), SimilarityDistill()])
def test_zero_loss_and_gradient_when_student_equals_teacher(loss_fn: torch.nn.Module) -> None:
    teacher = torch.randn(4, 6)
    student = teacher.clone().requires_grad_(True)
    loss = loss_fn(student, teacher, torch.tensor([0, 2, 3, 5]))
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert student.grad is not None and student.grad.abs().max().item() < 1e-6


def test_margin_mse_matches_hand_computed_value() -> None:
    s = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.8, 0.4]])
    t = torch.tensor([[8.0, 2.0, 4.0], [1.0, 6.0, 3.0]])
    labels = torch.tensor([0, 1])
    # scaled by 10 and 1: query 0 margins student (4, 8) teacher (6, 4); query 1 margins (6, 4) vs (5, 3)
    expected = ((4 - 6) ** 2 + (8 - 4) ** 2 + (6 - 5) ** 2 + (4 - 3) ** 2) / 4
    loss = MarginMSE(student_scale=10.0, teacher_scale=1.0)(s, t, labels)
    assert abs(loss.item() - expected) < 1e-5


def test_similarity_distill_matches_hand_computed_value() -> None:
    s = torch.tensor([[0.5, 0.1], [0.0, 1.0]])
    t = torch.tensor([[0.2, 0.1], [0.4, 0.6]])
    expected = (0.3 ** 2 + 0.0 + 0.4 ** 2 + 0.4 ** 2) / 4
    assert abs(SimilarityDistill()(s, t).item() - expected) < 1e-6


def test_embedding_distill_projection_shapes_and_values() -> None:
    loss_fn = EmbeddingDistill(384, 768, kind="mse")
    assert tuple(loss_fn.projection.weight.shape) == (768, 384)
    student, teacher = torch.randn(5, 384, requires_grad=True), torch.randn(5, 768)
    loss_fn(student, teacher).backward()
    assert student.grad is not None and loss_fn.projection.weight.grad is not None
    with pytest.raises(ValueError, match="projected student"):
        loss_fn(torch.randn(5, 384), torch.randn(5, 512))
    # hand-computed, with the projection set to a known map 2 -> 3
    small = EmbeddingDistill(2, 3, kind="mse")
    small.projection.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x, e = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0, 1.0]])  # W x = (1, 2, 3)
    assert abs(small(x, e).item() - (0 + 1 + 4) / 3) < 1e-6
    small_cos = EmbeddingDistill(2, 3, kind="cosine")
    small_cos.projection.weight.data = small.projection.weight.data.clone()
    assert abs(small_cos(x, e).item() - (1 - 6 / (math.sqrt(14) * math.sqrt(3)))) < 1e-6


def test_candidate_scores_cover_in_batch_passages() -> None:
    q, p = torch.randn(2, 4), torch.randn(6, 4)  # 2 queries x (1 + 2 negatives)
    tq, tp = torch.randn(2, 8), torch.randn(6, 8)
    student, teacher, labels = candidate_scores(q, p, Batch(query={}, passage={}, teacher_query=tq, teacher_passage=tp))
    assert student.shape == teacher.shape == (2, 6)
    assert labels.tolist() == [0, 3]
    torch.testing.assert_close(teacher, tq @ tp.T)
    own = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    student, teacher, labels = candidate_scores(q, p, Batch(query={}, passage={}, teacher_scores=own))
    assert student.shape == (2, 3) and labels.tolist() == [0, 0]
    torch.testing.assert_close(student[1, 2], q[1] @ p[5])


def test_keep_teacher_layers(tmp_path: Path) -> None:
    from conftest import build_tiny_model
    from transformers import AutoModel

    from trainer.build import build_encoder
    from trainer.config import ModelConfig
    from omegaconf import OmegaConf

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=32, layers=4, seed=3)
    teacher = AutoModel.from_pretrained(teacher_dir)
    cfg = OmegaConf.structured(ModelConfig(name_or_path=str(teacher_dir), init_from_teacher_layers=[0, 3]))
    student = build_encoder(cfg)
    assert student.backbone.config.num_hidden_layers == 2 and len(student.backbone.encoder.layer) == 2
    for new, old in [(0, 0), (1, 3)]:
        for (name, a), (_, b) in zip(student.backbone.encoder.layer[new].state_dict().items(),
                                     teacher.encoder.layer[old].state_dict().items()):
            assert torch.equal(a, b), name
    torch.testing.assert_close(student.backbone.embeddings.word_embeddings.weight,
                               teacher.embeddings.word_embeddings.weight)
    from trainer.models import Encoder
    from trainer.models.checkpoint import save_checkpoint

    save_checkpoint(student, tmp_path / "student")
    reloaded = Encoder.from_pretrained(str(tmp_path / "student"))
    texts = ["w1 w2 w3", "news of the word"]
    torch.testing.assert_close(torch.from_numpy(reloaded.encode(texts)), torch.from_numpy(student.encode(texts)))
    with pytest.raises(ValueError, match="increasing"):
        build_encoder(OmegaConf.structured(ModelConfig(name_or_path=str(teacher_dir),
                                                       init_from_teacher_layers=[2, 1])))


def _held_out_kl(student_dir: Path, teacher_dir: Path, rows: list[dict]) -> float:
    from trainer.models import Encoder

    student, teacher = Encoder.from_pretrained(str(student_dir)), Encoder.from_pretrained(str(teacher_dir))
    queries, passages = [r["query"] for r in rows], [r["pos"][0] for r in rows]
    s = torch.from_numpy(student.encode(queries, "query") @ student.encode(passages).T)
    t = torch.from_numpy(teacher.encode(queries, "query") @ teacher.encode(passages).T)
    return ListwiseKL(0.05, 0.05, t2_scaling=False)(s, t).item()


def test_tiny_teacher_distils_into_tiny_student(compose, tiny_model: Path, tmp_path: Path) -> None:
    """Real loop: teacher cache, KL + embedding parts logged, projection in the resume state only."""
    import json

    from safetensors import safe_open

    from conftest import build_tiny_model, make_rows
    from trainer.loop import train

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    cfg = compose("teacher=mpnet", f"teacher.name_or_path={teacher_dir}", "distill=kl",
                  "distill.embedding.weight=1.0", "loss.weight=0.0", "train.max_steps=24", "optim.lr=3e-3",
                  "optim.warmup_ratio=0.0", "logger.every_n_steps=4", "eval.before_training=false")
    train(cfg)
    run = Path(cfg.run_dir)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"contrastive", "kl", "embed_distill", "loss"} <= set(logged[0])
    assert logged[-1]["kl"] < logged[0]["kl"]
    cache = run.parent / "teacher-cache"
    assert any(cache.rglob("chunk-*.npz"))  # the teacher's embeddings were written once, to disk
    state = next((run / "state").iterdir())
    with safe_open(str(state / "model.safetensors"), "pt") as f:
        assert "distill.embed_distill.projection.weight" in set(f.keys())
    ckpt = next((run / "checkpoints").iterdir())
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert not any("projection" in k or "distill" in k for k in f.keys())
    held_out = make_rows(48, seed=5)
    assert _held_out_kl(ckpt, teacher_dir, held_out) < 0.8 * _held_out_kl(tiny_model, teacher_dir, held_out)


def test_distill_tasks_leave_other_tasks_batches_to_the_contrastive_loss(compose, tiny_model: Path,
                                                                          tmp_path: Path) -> None:
    """distill.tasks=[a]: the teacher scores task a's batches; task b's get a zero KL (with a graph) and no targets."""
    import json

    from conftest import build_tiny_model, make_rows, write_jsonl
    from trainer.loop import train

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    rows = make_rows(32, seed=1, task="a") + make_rows(32, seed=2, task="b")
    cfg = compose("teacher=mpnet", f"teacher.name_or_path={teacher_dir}", "distill=kl", "distill.tasks=[a]",
                  f"data.train_files=[{write_jsonl(tmp_path / 'ab.jsonl', rows)}]", "data.task_homogeneous=true",
                  "data.num_negatives=0", "train.max_steps=8", "logger.every_n_steps=1", "eval.tasks=[]")
    train(cfg)
    logged = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    kls = [r["kl"] for r in logged]
    assert len(kls) == 8 and 0 < kls.count(0.0) < 8  # both tasks trained; only task a's steps carry a KL
    assert all(k > 0 for k in kls if k != 0.0)
