"""Decoder-LLM embedders on a tiny random Llama: last-token pooling under left padding, EOS, bidirectional attention.

    pytest tests/test_decoder.py
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

WORDS = [f"w{i}" for i in range(50)] + ["Instruct", "Query", ":"]


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A random LlamaModel (hidden 32, 2 layers) and a word-level tokenizer with <s> prepended and </s> as EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    LlamaModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def last_token_encoder(path: Path, **spec_kwargs):
    from trainer.models import Encoder, EncoderSpec

    spec = EncoderSpec.from_mapping({"pooling": "last", "max_length_query": 16, "max_length_passage": 16,
                                     **spec_kwargs})
    return Encoder.from_pretrained(str(path), spec)


def test_left_padding_eos_and_last_token(tiny_llama: Path) -> None:
    encoder = last_token_encoder(tiny_llama)
    assert encoder.spec.append_eos and encoder.spec.padding_side == "left"
    eos, bos = encoder.tokenizer.eos_token_id, encoder.tokenizer.bos_token_id
    feats = encoder.tokenize(["w1 w2 w3 w4", "w5"], "passage")
    ids, mask = feats["input_ids"], feats["attention_mask"]
    assert ids.shape == (2, 6)  # <s> + 4 words + </s>
    assert ids[:, -1].tolist() == [eos, eos]  # EOS appended, at the right edge under left padding
    assert mask[1].tolist() == [0, 0, 0, 1, 1, 1] and ids[1, 3] == bos
    encoder.eval()
    with torch.no_grad():
        batched = encoder(**feats)  # (2, 32)
        alone = encoder(**encoder.tokenize(["w5"], "passage"))  # (1, 32), no padding at all
        hidden = encoder.backbone(input_ids=ids[1:, 3:]).last_hidden_state  # (1, 3, 32)
    # The padded row's embedding is its last real token's state (the EOS), as if it were alone.
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], torch.nn.functional.normalize(hidden[0, -1], dim=-1), atol=1e-5, rtol=0)


def test_truncation_keeps_eos(tiny_llama: Path) -> None:
    encoder = last_token_encoder(tiny_llama, max_length_query=4)
    ids = encoder.tokenize([" ".join(f"w{i}" for i in range(10))], "query")["input_ids"][0].tolist()
    assert len(ids) == 4 and ids[-1] == encoder.tokenizer.eos_token_id


def test_instruction_template_on_decoder(tiny_llama: Path) -> None:
    encoder = last_token_encoder(tiny_llama, instruction_template="Instruct : {instruction} Query : {text}",
                                 instructions={"news": "w7 w8"})
    ids = encoder.tokenize(["w1"], "query", tasks=["news"])["input_ids"][0].tolist()
    vocab = encoder.tokenizer.get_vocab()
    words = ["<s>", "Instruct", ":", "w7", "w8", "Query", ":", "w1", "</s>"]
    assert ids == [vocab[w] for w in words]


def test_bidirectional_attention(tiny_llama: Path, tmp_path: Path) -> None:
    from trainer.models import Encoder
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.decoder import make_bidirectional

    encoder = last_token_encoder(tiny_llama, pooling="mean")
    encoder.eval()
    a = encoder.tokenize(["w1 w2 w3"], "passage")
    b = encoder.tokenize(["w1 w2 w9"], "passage")

    def first_token(feats):
        with torch.no_grad():
            return encoder.backbone(input_ids=feats["input_ids"]).last_hidden_state[0, 1]  # w1 (after <s>)

    assert torch.allclose(first_token(a), first_token(b))  # causal: w1 cannot see w3/w9
    make_bidirectional(encoder.backbone)
    assert not torch.allclose(first_token(a), first_token(b), atol=1e-4)
    # Padding stays invisible under bidirectional attention too.
    with torch.no_grad():
        padded = encoder(**encoder.tokenize(["w1 w2 w3 w4 w5", "w6"], "passage"))[1]
        alone = encoder(**encoder.tokenize(["w6"], "passage"))[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    # A saved checkpoint reloads bidirectional (config.is_causal=false, module flags re-cleared).
    save_checkpoint(encoder, tmp_path / "ckpt")
    reloaded = Encoder.from_pretrained(str(tmp_path / "ckpt"))
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(**reloaded.tokenize(["w6"], "passage"))[0]
    torch.testing.assert_close(again, alone, atol=1e-5, rtol=1e-5)


def test_smollm2_recipe_composes(compose) -> None:
    cfg = compose("experiment=smollm2_lora", "model.name_or_path=unused")
    assert cfg.model.pooling == "last" and cfg.model.lora.enabled and cfg.train.mini_batch_size
    assert cfg.model.instruction_template and cfg.model.dtype == "float32"


@pytest.mark.slow
def test_smollm2_gguf_loads_and_encodes() -> None:
    from trainer.assets import smollm2
    from trainer.models import Encoder, EncoderSpec

    encoder = Encoder.from_pretrained(str(smollm2()), EncoderSpec.from_mapping({"pooling": "last"}))
    assert encoder.dim == 576 and encoder.tokenizer.eos_token
    emb = encoder.encode(["a short headline", "another, longer text about the weather"], side="passage")
    assert emb.shape == (2, 576) and abs(float((emb ** 2).sum(1)[0]) - 1) < 1e-4
