"""Shared fixtures: a tiny random BERT and tokenizer built offline, tiny training and eval data.

    pytest -q                 # the fast suite
    pytest -q -m slow         # real-model tests that take longer
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

WORDS = [f"w{i}" for i in range(200)] + ["query", "passage", "instruct", "the", "a", "of", "news", "word"]


def build_tiny_model(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random BertModel (hidden 32, 2 layers) and a WordPiece tokenizer built with `tokenizers`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS + [":", ".", ",", "?", "!", "-"])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    model = BertModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """Tiny models: one intra-op thread is far faster than two on a busy 2-core machine (no spin-waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_bert"))


def make_rows(n: int, seed: int = 0, negatives: int = 0, task: str | None = None) -> list[dict[str, Any]]:
    """Synthetic pairs a model can learn: a query's words reappear in its positive."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        key = [f"w{rng.randrange(200)}" for _ in range(3)]
        pos = " ".join(key + [f"w{rng.randrange(200)}" for _ in range(5)]) + f" {i}"
        row: dict[str, Any] = {"query": " ".join(key) + f" {i}", "pos": [pos], "neg": []}
        for j in range(negatives):
            row["neg"].append(" ".join(f"w{rng.randrange(200)}" for _ in range(8)) + f" n{i} {j}")
        if task:
            row["task"] = task
        rows.append(row)
    return rows


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_beir(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """BEIR folder whose queries are the rows' queries and whose corpus is their positives."""
    write_jsonl(folder / "corpus.jsonl",
                [{"_id": f"d{i}", "title": "", "text": r["pos"][0]} for i, r in enumerate(rows)])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(rows))))
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_data")
    return {"train": write_jsonl(root / "train.jsonl", make_rows(96, seed=1, negatives=3)),
            "beir": write_beir(root / "beir", make_rows(24, seed=2))}


@pytest.fixture
def compose(tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> Callable[..., Any]:
    """Compose conf/train.yaml with the tiny model and data; extra overrides are appended."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()

    def _compose(*overrides: str, config_name: str = "train") -> Any:
        base = [f"model.name_or_path={tiny_model}", f"data.train_files=[{tiny_data['train']}]",
                f"eval.tasks=[{{name: tiny, path: '{tiny_data['beir']}', kind: retrieval}}]",
                f"paths.runs={tmp_path / 'runs'}", "name=t", "train.batch_size=8", "train.progress_bar=false",
                "model.max_length_passage=32", "model.max_length_query=16",
                "train.mixed_precision=no"]  # equivalences are checked in float32; auto: tests/test_mixed_precision.py
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=base + list(overrides))

    return _compose
