"""train.mixed_precision=auto: bf16 autocast where the hardware computes it natively, float32 elsewhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import trainer.runtime as runtime
from trainer.runtime import training_mixed_precision


@pytest.mark.parametrize("native, want", [(True, "bf16"), (False, "no")])
def test_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool, want: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: native)
    assert training_mixed_precision("auto") == want
    assert training_mixed_precision("no") == "no" and training_mixed_precision("bf16") == "bf16"


def test_auto_on_a_gpu_without_bf16_is_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert training_mixed_precision("auto") == "no"


def test_an_unknown_mixed_precision_is_refused_before_a_model_loads(compose) -> None:
    from trainer.loop import train

    with pytest.raises(ValueError, match="train.mixed_precision=bf17: must be auto"):
        train(compose("train.mixed_precision=bf17"))


def test_bf16_autocast_trains_and_resumes_exactly(compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # auto on a CPU with native bf16 (forced here, so the test means the same on every machine).
    from trainer.loop import train

    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: True)
    recipe = ["train.mixed_precision=auto", "train.max_steps=6", "logger.every_n_steps=1", "eval.tasks=[]",
              "train.save_every_n_steps=3", "train.keep_last=0", "optim.lr=1e-3"]
    train(compose(*recipe, "name=reference"))
    want = [json.loads(line) for line in (tmp_path / "runs" / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert "mixed precision bf16 (train.mixed_precision=auto)" in (tmp_path / "runs" / "reference" / "train.log").read_text()
    train(compose(*recipe, "name=float32", "train.mixed_precision=no"))
    plain = [json.loads(line) for line in (tmp_path / "runs" / "float32" / "metrics.jsonl").read_text().splitlines()]
    assert want[0]["loss"] != plain[0]["loss"]  # autocast really ran: the first loss differs in its rounding
    assert want[0]["loss"] == pytest.approx(plain[0]["loss"], rel=0.05)
    train(compose(*recipe, "name=victim", "train.stop_after_steps=3"))
    train(compose(*recipe, "name=victim", "resume=auto"))
    got = [json.loads(line) for line in (tmp_path / "runs" / "victim" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 7))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-6)
