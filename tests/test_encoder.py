"""Pooling, prompts, instruction templates, prompt exclusion, padding sides; agreement with sentence-transformers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.models import Encoder, EncoderSpec, PromptSpec
from trainer.models.pooling import pool


def test_pooling_modes_under_both_padding_sides() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # token t of row b has value 4b+t
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool(hidden, right, right, "cls").flatten().tolist() == [0.0, 4.0]
    assert pool(hidden, right, right, "last").flatten().tolist() == [2.0, 5.0]
    assert pool(hidden, right, right, "mean").flatten().tolist() == [1.0, 4.5]
    assert pool(hidden, left, left, "cls").flatten().tolist() == [1.0, 6.0]
    assert pool(hidden, left, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, left, left, "mean").flatten().tolist() == [2.0, 6.5]
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(hidden, right, right, "max")


def test_prompt_spec_prefixes_and_instructions() -> None:
    spec = PromptSpec(query_prefix="query: ", passage_prefix="passage: ",
                      instruction_template="Instruct: {instruction}\nQuery: {text}",
                      instructions={"news": "Find the article"})
    assert spec.format("hi", "query") == ("query: hi", 7)
    assert spec.format("doc", "passage") == ("passage: doc", 9)
    text, n = spec.format("hi", "query", spec.instruction_for("news"))
    assert text == "Instruct: Find the article\nQuery: hi" and text[:n] == "Instruct: Find the article\nQuery: "
    assert spec.instruction_for("news", "row instruction") == "row instruction"
    assert spec.instruction_for("other") is None
    with pytest.raises(ValueError, match="must end with"):
        PromptSpec(instruction_template="{text} {instruction}")


def test_exclude_prompt_tokens_from_mean_pooling(tiny_model: Path) -> None:
    spec = EncoderSpec(prompts=PromptSpec(query_prefix="query : "), exclude_prompt_from_pooling=True)
    enc = Encoder.from_pretrained(str(tiny_model), spec)
    feats = enc.tokenize(["w1 w2", "w3"], "query")
    # [CLS] query : w1 w2 [SEP] -> CLS and the two prompt tokens are excluded, the text and SEP kept.
    assert feats["input_ids"].shape == (2, 6)
    assert feats["pool_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]]
    assert feats["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]


def test_last_token_pooling_appends_eos_and_pads_left(tiny_model: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    with pytest.raises(ValueError, match="append_eos needs a tokenizer with an EOS token"):
        Encoder(AutoModel.from_pretrained(str(tiny_model)), tokenizer, EncoderSpec(pooling="last", append_eos=True))
    tokenizer.eos_token = "[SEP]"
    spec = EncoderSpec.from_mapping({"pooling": "last"})
    assert spec.append_eos and spec.padding_side == "left"  # the defaults for last-token pooling
    enc = Encoder(AutoModel.from_pretrained(str(tiny_model)), tokenizer, spec)
    feats = enc.tokenize(["w1 w2 w3", "w4"], "passage")
    sep = enc.tokenizer.convert_tokens_to_ids("[SEP]")
    assert feats["input_ids"][:, -1].tolist() == [sep, sep]  # last real token is EOS in every row
    assert feats["attention_mask"][1].tolist()[:2] == [0, 0]  # left padding
    emb = enc(**feats)
    hidden = enc.backbone(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).last_hidden_state
    expected = torch.nn.functional.normalize(hidden[:, -1], dim=-1)
    torch.testing.assert_close(emb, expected)


def test_max_length_per_side_truncates(tiny_model: Path) -> None:
    enc = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_query=4, max_length_passage=8))
    text = " ".join(f"w{i}" for i in range(20))
    assert enc.tokenize([text], "query")["input_ids"].shape[1] == 4
    assert enc.tokenize([text], "passage")["input_ids"].shape[1] == 8


def test_encode_restores_input_order_and_batches_equal_single(tiny_model: Path) -> None:
    enc = Encoder.from_pretrained(str(tiny_model))
    texts = ["w1", "w2 w3 w4 w5 w6", "w7 w8", "w9 w10 w11"]
    batched = enc.encode(texts, batch_size=2)
    single = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("exclude", [False, True])
def test_checkpoint_with_prompts_matches_sentence_transformers(tiny_model: Path, tmp_path: Path,
                                                               exclude: bool) -> None:
    from sentence_transformers import SentenceTransformer

    from trainer.models.checkpoint import save_checkpoint

    spec = EncoderSpec(prompts=PromptSpec(query_prefix="query : ", passage_prefix="passage : "),
                       exclude_prompt_from_pooling=exclude)
    enc = Encoder.from_pretrained(str(tiny_model), spec)
    folder = save_checkpoint(enc, tmp_path / "ckpt", {"step": 1})
    texts = ["w1 w2 w3", "w4 w5"]
    st = SentenceTransformer(str(folder), device="cpu")
    for side in ("query", "passage"):
        ours = Encoder.from_pretrained(str(folder)).encode(texts, side=side)
        theirs = st.encode(texts, prompt_name=side)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
