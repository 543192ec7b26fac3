"""A new distillation loss or teacher kind is one registration plus one YAML: no other file is edited.

The toys below stand for a new file in ``trainer/losses/`` or ``trainer/teachers/``; their YAMLs go to a config
folder of their own (a ``conf/distill/`` or ``conf/teacher/`` file in a checkout), found through Hydra's search
path. (The eval-task kind's toy is in tests/test_eval_kinds.py.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from trainer.losses import registry
from trainer.teachers import kinds


@dataclass
class ToyNormConfig:
    weight: float = 0.0
    target: float = 1.0


class ToyNorm(nn.Module):
    """(mean squared norm of the student's rows - target)^2; reads embeddings, ignores the teacher's."""
    inputs = "embeddings"

    def __init__(self, target: float, weight: float) -> None:
        super().__init__()
        self.target, self.weight = target, weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (student.float().pow(2).sum(-1).mean() - self.target) ** 2


def build_toy(settings: Any, dims: registry.Dims) -> ToyNorm:
    return ToyNorm(settings.target, settings.weight)


@pytest.fixture
def toy_loss(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Register the toy (removed again afterwards) and write its YAML; returns the extra config folder."""
    monkeypatch.setattr(registry, "DISTILL_LOSSES", dict(registry.discover()))
    registry.register_distill_loss("toy_norm", part="toy", config=ToyNormConfig, inputs="embeddings",
                                   needs_teacher_embeddings=True)(build_toy)
    conf = tmp_path / "extra_conf"
    (conf / "distill").mkdir(parents=True)
    (conf / "distill" / "toy.yaml").write_text("toy_norm:\n  weight: 0.5\n  target: 2.0\n")
    from trainer.config import register_configs

    register_configs()  # the schema now has distill.toy_norm
    yield conf
    monkeypatch.undo()
    register_configs()


def test_a_registered_loss_trains_from_its_yaml_and_logs_its_part(compose: Any, toy_loss: Path,
                                                                  tmp_path: Path) -> None:
    from conftest import build_tiny_model
    from trainer.loop import train

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    cfg = compose(f"hydra.searchpath=[file://{toy_loss}]", "teacher=mpnet", f"teacher.name_or_path={teacher_dir}",
                  "distill=toy", "train.max_steps=2", "logger.every_n_steps=1", "eval.tasks=[]")
    assert cfg.distill.toy_norm.target == 2.0
    train(cfg)
    logged = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    # The student's embeddings are normalised (squared norm 1): the part is 0.5 * (1 - 2)^2.
    assert logged[0]["toy"] == pytest.approx(0.5, abs=1e-4)
    assert logged[0]["loss"] == pytest.approx(logged[0]["contrastive"] + 0.5, abs=1e-4)


def test_a_registered_loss_is_checked_at_compose_time(compose: Any, toy_loss: Path) -> None:
    with pytest.raises(Exception, match="tagret"):
        compose("distill.toy_norm.tagret=3")


def test_registered_losses_are_off_until_weighted(compose: Any, toy_loss: Path) -> None:
    from trainer.teachers.distill import build_distill_losses

    cfg = compose("distill=kl")
    assert list(build_distill_losses(cfg.distill, 32, 48)) == ["kl"]
    assert registry.distill_weights(cfg.distill)["toy_norm"] == 0.0


def test_two_losses_cannot_share_a_name_or_a_part(toy_loss: Path) -> None:
    def other(settings: Any, dims: registry.Dims) -> ToyNorm:
        return ToyNorm(0.0, 1.0)

    with pytest.raises(ValueError, match="registered twice"):
        registry.register_distill_loss("toy_norm", part="toy", config=ToyNormConfig, inputs="embeddings")(other)
    with pytest.raises(ValueError, match="part name 'kl'"):
        registry.register_distill_loss("toy_other", part="kl", config=ToyNormConfig, inputs="scores")(other)
    with pytest.raises(ValueError, match="inputs must be one of"):
        registry.register_distill_loss("toy_other", part="other", config=ToyNormConfig, inputs="logits")


@dataclass
class ToyTeacherConfig:
    _target_: str = f"{__name__}.ToyTeacher"
    dim: int = 8
    seed: int = 0


class ToyTeacher:
    """Embeds a text as a seeded random unit vector of its words (a stand-in for a new kind of model)."""
    name = "toy"

    def __init__(self, dim: int, seed: int) -> None:
        self.dim, self.seed = dim, seed

    def to(self, device: Any) -> "ToyTeacher":
        return self

    def embed(self, texts: Any, side: str, tasks: Any = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i] += np.random.default_rng([self.seed, sum(map(ord, word))]).standard_normal(self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

    def score(self, queries: Any, passages: Any) -> np.ndarray:
        return (self.embed(queries, "query") * self.embed(passages, "passage")).sum(1)


@pytest.fixture
def toy_teacher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(kinds, "TEACHER_KINDS", dict(kinds.discover()))
    kinds.register_teacher_kind("toy", ToyTeacherConfig)
    conf = tmp_path / "extra_conf"
    (conf / "teacher").mkdir(parents=True)
    (conf / "teacher" / "toy.yaml").write_text("defaults:\n  - toy_schema\n  - _self_\ndim: 16\n")
    from trainer.config import register_configs

    register_configs()
    yield conf
    monkeypatch.undo()
    register_configs()


def test_a_registered_teacher_kind_teaches_from_its_yaml(compose: Any, toy_teacher: Path) -> None:
    from trainer.loop import train

    cfg = compose(f"hydra.searchpath=[file://{toy_teacher}]", "teacher=toy", "distill=kl", "train.max_steps=2",
                  "logger.every_n_steps=1", "eval.tasks=[]")
    assert cfg.teacher.dim == 16
    train(cfg)
    logged = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["kl"] > 0


def test_a_teacher_kind_refuses_keys_it_does_not_have(compose: Any, toy_teacher: Path) -> None:
    with pytest.raises(Exception, match="max_length_query"):
        compose(f"hydra.searchpath=[file://{toy_teacher}]", "teacher=toy", "teacher.max_length_query=32")
    with pytest.raises(Exception, match="max_length"):  # a cross-encoder's key on the bi-encoder
        compose("teacher=mpnet", "teacher.max_length=320")
    with pytest.raises(ValueError, match="_target_"):
        kinds.register_teacher_kind("broken", dict)


def test_an_old_state_with_every_kinds_teacher_fields_still_resumes() -> None:
    """States saved when one schema held every kind's fields carry keys the bi-encoder never read."""
    from trainer.run import _unused_by_teacher

    target = {"teacher._target_": "trainer.teachers.BiEncoderTeacher"}
    saved = {**target, "teacher.max_length": 320, "teacher.pooling": "mean"}
    now = {**target, "teacher.pooling": "mean"}
    assert _unused_by_teacher("teacher.max_length", saved, now)
    assert not _unused_by_teacher("teacher.pooling", saved, {**target, "teacher.pooling": "cls"})
    other = {"teacher._target_": "trainer.teachers.CrossEncoderTeacher"}
    assert not _unused_by_teacher("teacher.max_length", saved, other)
