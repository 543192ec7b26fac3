"""The loop's bookkeeping: epochs of different lengths, exact resume with re-mining, teachers under re-mining,
one evaluation and one save per step, loss precision and averaging.

    pytest tests/test_loop.py
"""
from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from conftest import make_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Turn a hang into a failure (SIGALRM interrupts the Python loop)."""
    def expired(*_: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def records(run: Path, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def shared_pool_rows(n: int = 64) -> list[dict[str, Any]]:
    """Rows whose negatives come from a pool of 12 texts: how many rows clash changes from epoch to epoch."""
    pool = [f"w{100 + j} w{150 + j} shared" for j in range(12)]
    return [{"query": f"w{i % 90} query {i}", "pos": [f"w{i % 90} w{(i * 7) % 90} passage {i}"],
             "neg": [pool[(i * 5 + j) % 12] for j in range(4)]} for i in range(n)]


def test_each_epoch_ends_where_its_own_batches_end(compose, tmp_path: Path) -> None:
    from trainer.loop import train

    data = write_jsonl(tmp_path / "pool.jsonl", shared_pool_rows())
    cfg = compose(f"data.train_files=[{data}]", "data.num_negatives=1", "train.seed=1", "train.epochs=3",
                  "eval.tasks=[]", "logger.every_n_steps=1")
    with deadline(240):
        train(cfg)
    steps = records(Path(cfg.run_dir))
    # Epochs build 7, 6 and 7 global batches: 20 steps, each epoch ending after its own batches.
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert [r["epoch"] for r in steps if r["step"] in (7, 13, 20)] == [1, 2, 3]
    assert json.loads((Path(cfg.run_dir) / "DONE.json").read_text())["step"] == 20


def test_resume_with_remining_reproduces_the_uninterrupted_run(compose) -> None:
    from trainer.loop import train

    recipe = ["data.num_negatives=1", "train.remine_every=2", "train.save_every_n_steps=2", "train.max_steps=4",
              "eval.tasks=[]", "logger.every_n_steps=1", "train.keep_last=0"]
    reference = compose(*recipe, "name=reference")
    train(reference)
    train(compose(*recipe, "name=victim", "train.stop_after_steps=2"))
    state = Path(compose(*recipe, "name=victim").run_dir) / "state" / "step-000002"
    assert (state / "remined.json").exists()  # the negatives in use are part of the state
    victim = compose(*recipe, "name=victim", "resume=auto")
    train(victim)
    want = {r["step"]: r for r in records(Path(reference.run_dir)) if "loss" in r}
    got = {r["step"]: r for r in records(Path(victim.run_dir)) if "loss" in r}
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    for step in (3, 4):
        assert abs(got[step]["loss"] - want[step]["loss"]) <= 1e-6, (step, got[step]["loss"], want[step]["loss"])


def test_remining_refuses_a_precomputed_teacher_at_start(compose, tmp_path: Path) -> None:
    from trainer.loop import train

    rows = make_rows(32, seed=3, negatives=2)
    for r in rows:
        r["pos_scores"], r["neg_scores"] = [3.0], [1.0, 0.5]
    cfg = compose(f"data.train_files=[{write_jsonl(tmp_path / 'scored.jsonl', rows)}]", "teacher=precomputed",
                  "distill=margin_mse", "data.num_negatives=1", "train.remine_every=2", "train.max_steps=4",
                  "eval.tasks=[]")
    with pytest.raises(ValueError, match="train.remine_every with teacher=precomputed"):
        train(cfg)
    assert not Path(cfg.run_dir).exists()  # refused before anything was written


def test_remining_with_a_cross_encoder_scores_the_new_pairs(compose, tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """24 rows, 3 steps an epoch, re-mined at steps 2 and 4: epoch 2 shows every row with its re-mined negatives,
    and each (query, new negative) pair gets the cross-encoder's own score."""
    from test_teachers import _tiny_cross_encoder

    from trainer.data.batch import Batch
    from trainer.loop import train
    from trainer.teachers.cross_encoder import CrossEncoderTeacher
    from trainer.teachers.targets import TeacherTargets, pair_key, text_id

    rows = make_rows(24, seed=5, negatives=2)
    reranker = _tiny_cross_encoder(tiny_model, tmp_path / "ce")
    original = {int(pair_key(np.array([text_id(r["query"])]), np.array([text_id(t)]))[0])
                for r in rows for t in (*r["pos"], *r["neg"])}
    texts = {text_id(t): t for r in rows for t in (r["query"], *r["pos"], *r["neg"])}
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (query ids, passage ids, scores) of each batch
    annotate = TeacherTargets.annotate

    def recording(self: TeacherTargets, batch: Batch) -> Batch:
        out = annotate(self, batch)
        group = out.teacher_scores.shape[1]
        seen.append((np.repeat(self.query_ids[batch.index.numpy()], group), batch.passage_ids.numpy(),
                     out.teacher_scores.numpy().reshape(-1)))
        return out

    monkeypatch.setattr(TeacherTargets, "annotate", recording)
    cfg = compose(f"data.train_files=[{write_jsonl(tmp_path / 'rows.jsonl', rows)}]", "teacher=cross_encoder",
                  f"teacher.name_or_path={reranker}", "teacher.max_length=48",
                  f"teacher.cache_root={tmp_path / 'cache'}", "distill=margin_mse", "data.num_negatives=1",
                  "train.remine_every=2", "train.max_steps=6", "eval.tasks=[]", "logger.every_n_steps=1")
    train(cfg)
    steps = records(Path(cfg.run_dir))
    assert [r["step"] for r in steps if "margin_mse" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["remine_selected"] > 0 for r in steps if "remine_selected" in r] == [True, True]
    new = [(q, p, s) for qs, ps, ss in seen for q, p, s in zip(qs, ps, ss)
           if int(pair_key(np.array([q]), np.array([p]))[0]) not in original]
    assert new, "no batch held a re-mined pair"
    teacher = CrossEncoderTeacher(str(reranker), max_length=48)
    want = teacher.score([texts[int(q)] for q, _, _ in new], [texts[int(p)] for _, p, _ in new])
    np.testing.assert_allclose([s for _, _, s in new], want, atol=1e-5)


def test_final_step_is_evaluated_once_and_saved_once(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    from trainer.loop import train

    saved: list[str] = []
    original = Accelerator.save_state
    monkeypatch.setattr(Accelerator, "save_state",
                        lambda self, path, *a, **k: (saved.append(Path(path).name), original(self, path, *a, **k))[1])
    cfg = compose("train.max_steps=4", "eval.every_n_steps=2", "eval.before_training=false")
    train(cfg)
    assert [r["step"] for r in records(Path(cfg.run_dir), "eval.jsonl")] == [2, 4]
    saved.clear()
    stopped = compose("train.max_steps=6", "train.save_every_n_steps=2", "train.stop_after_steps=4", "name=stop",
                      "eval.tasks=[]")
    train(stopped)
    assert saved == [".tmp-step-000002", ".tmp-step-000004"]  # step 4 once, not again as the stopping save


def test_loss_is_float32_under_bf16_autocast(tiny_model: Path) -> None:
    """The plain step computes its loss inside the autocast-wrapped forward, GradCache outside it: both float32."""
    from dist_gradcache import build_objective, global_batch

    objective = build_objective(str(tiny_model), distill=True).eval()
    batch = global_batch(objective.encoder, distill=True)
    with torch.no_grad():
        query, passages = objective.embed(batch)
        plain = objective.loss_parts(query, passages, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = objective.loss_parts(query, passages, batch)
    for key in plain:
        assert autocast[key].dtype == torch.float32
        assert abs(float(autocast[key]) - float(plain[key])) < 1e-6, (key, float(autocast[key]), float(plain[key]))


@pytest.mark.parametrize("override,message", [
    ("train.max_steps=0", "train.max_steps=0: must be >= 1 or null"),
    ("train.max_steps=-1", "train.max_steps=-1: must be >= 1 or null"),
    ("train.epochs=0", "train.epochs=0: must be >= 1"),
    ("train.stop_after_steps=-2", "train.stop_after_steps=-2: must be >= 1 or null"),
    ("data.num_negatives=-1", "data.num_negatives=-1: must be >= 0"),
    ("train.batch_size=0", r"train.batch_size=0: must be >= 1 \(queries per device"),
])
def test_step_counts_and_sizes_are_checked_before_anything_runs(compose, override: str, message: str) -> None:
    from trainer.loop import train

    cfg = compose(override)
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not Path(cfg.run_dir).exists()
