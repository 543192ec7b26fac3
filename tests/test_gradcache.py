"""GradCache: the cached step's loss and parameter gradients equal the plain step's on the same batch.

    pytest tests/test_gradcache.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from dist_gradcache import build_objective, global_batch, grads_of, step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def assert_same(loss_a: float, grads_a: dict, loss_b: float, grads_b: dict) -> None:
    assert abs(loss_a - loss_b) < 1e-5, (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(torch.as_tensor(grads_a[name]), torch.as_tensor(grads_b[name]),
                                   atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("distill", [False, True])
def test_cached_equals_plain_one_process(tiny_model: Path, distill: bool) -> None:
    plain_loss, plain_grads = step(str(tiny_model), distill, cached=False)
    cached_loss, cached_grads = step(str(tiny_model), distill, cached=True, mini_batch=3)
    assert_same(plain_loss, plain_grads, cached_loss, cached_grads)
    # Loss-owned parameters get their gradients too (learnable temperature, distillation projection).
    assert "contrastive.log_inv_temperature" in cached_grads
    assert ("distill.embed_distill.projection.weight" in cached_grads) == distill
    assert any(k.startswith("encoder.backbone.encoder.layer.0") for k in cached_grads)


def test_dropout_masks_match_after_rng_restore(tiny_model: Path) -> None:
    """Dropout on: the cached step equals a plain step that embeds the same mini-batches in the same order."""
    from accelerate import Accelerator

    from trainer.gradcache import cached_step, split_features

    accelerator = Accelerator(cpu=True)
    objective = build_objective(str(tiny_model), distill=False)
    objective.train()
    batch = global_batch(objective.encoder, distill=False)
    torch.manual_seed(123)
    chunks_q, chunks_p = split_features(batch.query, 3), split_features(batch.passage, 3)
    query = torch.cat([objective.encoder(**c) for c in chunks_q])
    passages = torch.cat([objective.encoder(**c) for c in chunks_p])
    reference = objective.loss_parts(query, passages, batch)["loss"]
    reference.backward()
    ref_grads, ref_rng = grads_of(objective), torch.get_rng_state()
    objective.zero_grad()

    torch.manual_seed(123)
    parts = cached_step(accelerator, objective, batch, 3)
    assert abs(float(parts["loss"]) - float(reference.detach())) < 1e-6
    assert_same(0.0, ref_grads, 0.0, grads_of(objective))
    assert torch.equal(torch.get_rng_state(), ref_rng)  # generators continue as after one pass
    # Without the restore the re-forward would draw new dropout masks: the gradients would differ.
    objective.zero_grad()
    torch.manual_seed(123)
    plain = objective(batch)["loss"]
    assert abs(float(plain.detach()) - float(reference.detach())) > 1e-4


def test_split_trims_padding_per_mini_batch() -> None:
    from trainer.gradcache import split_features

    ids = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9], [0, 0, 0, 4], [0, 0, 3, 2]])  # left padding, pad id 0
    mask = (ids != 0).long()
    chunks = split_features({"input_ids": ids, "attention_mask": mask, "pool_mask": mask}, 2)
    assert [c["input_ids"].tolist() for c in chunks] == [[[0, 5, 6], [7, 8, 9]], [[0, 4], [3, 2]]]
    right = split_features({"input_ids": ids.flip(1), "attention_mask": mask.flip(1), "pool_mask": mask.flip(1)}, 3)
    assert right[0]["input_ids"].shape == (3, 3) and right[1]["input_ids"].tolist() == [[2, 3]]


def test_cached_equals_plain_two_processes(tiny_model: Path, tmp_path: Path) -> None:
    """torchrun, 2 processes (gloo): plain (DDP) and cached both equal one process on the whole batch."""
    out = tmp_path / "gc.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # a free port
           str(ROOT / "tests" / "dist_gradcache.py"), str(tiny_model), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for distill in (False, True):
        loss, grads = step(str(tiny_model), distill, cached=False)  # one process, whole batch
        for cached in (False, True):
            got = results[f"{distill}-{cached}"]
            assert_same(loss, grads, got["loss"], got["grads"])
