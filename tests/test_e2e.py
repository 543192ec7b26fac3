"""End to end: train a few steps -> stop -> resume=auto -> export -> load in sentence-transformers -> encode."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_train_stop_resume_export_load(compose) -> None:
    from trainer.loop import train
    from trainer.models import Encoder

    first = compose("train.max_steps=6", "train.save_every_n_steps=2", "train.stop_after_steps=3",
                    "train.keep_last=2", "logger.every_n_steps=1")
    train(first)
    run = Path(first.run_dir)
    states = sorted(p.name for p in (run / "state").iterdir())
    assert states == ["step-000002", "step-000003"]
    assert not (run / "DONE.json").exists()

    with pytest.raises(FileExistsError, match="resume=auto"):
        train(compose("train.max_steps=6", "train.save_every_n_steps=2"))
    with pytest.raises(ValueError, match="optim.lr"):
        train(compose("train.max_steps=6", "train.save_every_n_steps=2", "resume=auto", "optim.lr=1e-3"))

    metric = train(compose("train.max_steps=6", "train.save_every_n_steps=2", "resume=auto",
                           "logger.every_n_steps=1"))
    assert metric is not None and 0.0 <= metric <= 1.0
    done = json.loads((run / "DONE.json").read_text())
    assert done["step"] == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed from step 3: no step trained twice, none skipped
    info = json.loads((run / "run_info.json").read_text())
    assert info["packages"]["torch"] and "commit" in info["git"]
    assert (run / "config.yaml").exists()

    ckpt = Path(done["final_checkpoint"])
    meta = json.loads((ckpt / "embedstill.json").read_text())
    assert meta["step"] == 6 and meta["encoder"]["pooling"] == "mean"
    ours = Encoder.from_pretrained(str(ckpt)).encode(["w1 w2 w3", "w4 w5"], side="query")

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(ckpt), device="cpu")
    theirs = st.encode(["w1 w2 w3", "w4 w5"], prompt_name="query", normalize_embeddings=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(ckpt)).config.hidden_size == 32
