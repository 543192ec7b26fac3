"""Checkpoint merging (trainer/models/merging.py, python -m trainer.merge): weighted averages by hand, the merged
folder loads everywhere a checkpoint does, and no output path can destroy a source."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.models import Encoder
from trainer.models.merging import average_states, check_weights, merge_checkpoints

ROOT = Path(__file__).resolve().parents[1]
NAME = "embeddings.word_embeddings.weight"


def test_average_states_by_hand() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([1, 2])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([7, 8])}
    c = {"w": torch.tensor([5.0, 10.0]), "ids": torch.tensor([9, 9])}
    merged = average_states([a, b, c], [0.5, 0.25, 0.25])
    # 0.5 * 1 + 0.25 * 3 + 0.25 * 5 = 2.5 ; 0.5 * 2 + 0.25 * 6 + 0.25 * 10 = 5
    assert torch.equal(merged["w"], torch.tensor([2.5, 5.0])) and torch.equal(merged["ids"], a["ids"])
    # bf16 inputs: summed in float32, the result in the first state's dtype (0.75 is exact in bf16)
    bf = average_states([{"w": torch.ones(2, dtype=torch.bfloat16)}, {"w": torch.zeros(2, dtype=torch.bfloat16)}],
                        [0.75, 0.25])
    assert bf["w"].dtype == torch.bfloat16 and torch.equal(bf["w"].float(), torch.full((2,), 0.75))
    with pytest.raises(ValueError, match="differ in parameters"):
        average_states([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="shape of a"):
        average_states([{"a": torch.zeros(1)}, {"a": torch.zeros(2)}], [0.5, 0.5])


def test_weights_must_be_one_per_checkpoint_and_sum_to_one() -> None:
    assert check_weights([0.7, 0.3], 2) == [0.7, 0.3]
    with pytest.raises(ValueError, match="sum to 1.2"):
        check_weights([0.9, 0.3], 2)
    with pytest.raises(ValueError, match="one per checkpoint"):
        check_weights([1.0], 2)
    with pytest.raises(ValueError, match="finite"):
        check_weights([float("nan"), 1.0], 2)


def two_checkpoints(tiny_model: Path, root: Path) -> tuple[Path, Path]:
    """Two checkpoints of the tiny model: the second's weights shifted by +1, with other prompts."""
    from trainer.models.checkpoint import save_checkpoint

    first, second = Encoder.from_pretrained(str(tiny_model)), Encoder.from_pretrained(str(tiny_model))
    first.spec.prompts.query_prefix = "query: "
    with torch.no_grad():
        for p in second.backbone.parameters():
            p.add_(1.0)
    return (save_checkpoint(first, root / "a" / "step-1", {"step": 1}),
            save_checkpoint(second, root / "b" / "step-2", {"step": 2}))


def test_merged_checkpoint_holds_the_weighted_average_and_loads_in_sentence_transformers(
        tiny_model: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    a, b = two_checkpoints(tiny_model, tmp_path)
    out = merge_checkpoints([a, b], [0.25, 0.75], tmp_path / "merged")
    wa, wb = (Encoder.from_pretrained(str(p)).backbone.state_dict()[NAME] for p in (a, b))
    merged = Encoder.from_pretrained(str(out))
    torch.testing.assert_close(merged.backbone.state_dict()[NAME], 0.25 * wa + 0.75 * wb)
    assert merged.spec.prompts.query_prefix == "query: "  # the first checkpoint's prompts
    meta = json.loads((out / "embedstill.json").read_text())
    assert meta["merged_from"] == [{"checkpoint": "a/step-1", "weight": 0.25}, {"checkpoint": "b/step-2", "weight": 0.75}]
    assert str(tmp_path) not in (out / "embedstill.json").read_text()  # no path of this machine
    texts = ["w1 w2 w3", "w4 w5"]
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(texts), merged.encode(texts, side="passage"), atol=1e-5)


def test_no_output_path_can_destroy_a_source(tiny_model: Path, tmp_path: Path) -> None:
    a, b = two_checkpoints(tiny_model, tmp_path)
    before = (a / "model.safetensors").read_bytes()
    for out in (a, a.parent, a / "inside"):  # the source itself, the folder holding it, a folder inside it
        with pytest.raises(ValueError, match="overlaps the source checkpoint"):
            merge_checkpoints([a, b], [0.5, 0.5], out)
    assert (a / "model.safetensors").read_bytes() == before and not (a / "inside").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an earlier merge"):
        merge_checkpoints([a, b], [0.5, 0.5], other)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        merge_checkpoints([a, other], [0.5, 0.5], tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not an exported checkpoint"):
        merge_checkpoints([tiny_model, a], [0.5, 0.5], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with_base = merge_checkpoints([a, tiny_model], [0.5, 0.5], tmp_path / "with-base")  # a base folder as partner
    assert json.loads((with_base / "embedstill.json").read_text())["merged_from"][1]["weight"] == 0.5
    first = merge_checkpoints([a, b], [0.5, 0.5], tmp_path / "m")
    again = merge_checkpoints([a, b], [0.9, 0.1], first)  # an earlier merge is replaced
    assert json.loads((again / "embedstill.json").read_text())["merged_from"][0]["weight"] == 0.9
    assert not any(p.name.startswith((".old-", ".tmp")) for p in tmp_path.iterdir())


def test_the_merge_command_writes_a_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    a, b = two_checkpoints(tiny_model, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, "-m", "trainer.merge", f"checkpoints=[{a},{b}]",
                           f"out={tmp_path / 'soup'}"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [s["weight"] for s in json.loads((tmp_path / "soup" / "embedstill.json").read_text())["merged_from"]] \
        == [0.5, 0.5]  # equal weights by default
    bad = subprocess.run([sys.executable, "-m", "trainer.merge", f"checkpoints=[{a},{b}]", "weights=[0.5,0.6]",
                          f"out={tmp_path / 'x'}"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert bad.returncode != 0 and "sum to 1.1" in bad.stderr and not (tmp_path / "x").exists()
