"""Every checkpoint is a complete model repository: a Hub model card, per-side lengths sentence-transformers reads,
no path of the training machine in any file, folders readable per the umask.

    pytest -q tests/test_model_repo.py
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import ROOT

LONG = " ".join(f"w{i}" for i in range(40))  # past both max lengths below


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def trained_run(tiny_model: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 5-step run of the loop: checkpoints at steps 4 and 5 (the last two kept), evaluation at steps 2 and 4
    (each before that step's save) and after the final save."""
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs
    from trainer.loop import train

    register_configs()
    root = tmp_path_factory.mktemp("publish")
    overrides = [f"model.name_or_path={tiny_model}", f"data.train_files=[{tiny_data['train']}]",
                 f"eval.tasks=[{{name: tiny, path: '{tiny_data['beir']}', kind: retrieval}}]",
                 f"paths.runs={root / 'runs'}", "name=pub", "train.batch_size=8", "train.progress_bar=false",
                 "model.max_length_passage=32", "model.max_length_query=16", "train.max_steps=5",
                 "train.save_every_n_steps=2", "eval.every_n_steps=2", "train.keep_last=2",
                 "model.query_prefix='query: '", "model.passage_prefix='passage: '"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    old = os.umask(0o022)
    try:
        train(cfg)
    finally:
        os.umask(old)
    return Path(cfg.run_dir)


def machine_paths(*extra: Path) -> list[str]:
    """Paths of this machine no published file may name: home, the repo root, the given temporary folders."""
    found = [str(Path.home()), str(ROOT), str(ROOT.resolve())] + [str(p) for p in extra] + \
            [str(p.resolve()) for p in extra]
    return sorted({p for p in found if len(p) > 1})


def leaks(folder: Path, paths: list[str]) -> list[str]:
    """``file:line: path`` for every text file under ``folder`` naming one of ``paths``."""
    hits = []
    for file in sorted(folder.rglob("*")):
        if not file.is_file():
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # weights
        for line_no, line in enumerate(text.splitlines(), start=1):
            hits += [f"{file.relative_to(folder)}:{line_no}: {p}" for p in paths if p in line]
    return hits


def test_trained_checkpoint_card_parses_with_hub_metadata_and_scores(trained_run: Path) -> None:
    from huggingface_hub import ModelCard

    ckpt = trained_run / "checkpoints" / "step-000004"
    card = ModelCard.load(ckpt / "README.md")
    data = card.data
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert data.base_model is None  # a local random model: no Hub id to claim
    assert {"sentence-transformers", "embedstill", "feature-extraction"} <= set(data.tags)
    logged = [json.loads(line) for line in (trained_run / "eval.jsonl").read_text().splitlines()]
    at_4 = next(r for r in logged if r["step"] == 4)
    scores = {r.metric_type: r.metric_value for r in data.eval_results}
    assert scores["ndcg_at_10"] == pytest.approx(at_4["tiny/ndcg_at_10"])
    assert scores["recall_at_1"] == pytest.approx(at_4["tiny/recall_at_1"])
    assert {r.task_type for r in data.eval_results} == {"information-retrieval"}
    assert {r.dataset_name for r in data.eval_results} == {"tiny"}
    text = card.text
    assert 'model.encode_query(queries)' in text and "at most 16 tokens" in text and "at most 32 tokens" in text
    assert "`'query: '`" in text and "`'passage: '`" in text
    base = next(r for r in logged if r["step"] == 0)
    assert f"| tiny | retrieval | test | nDCG@10 | {base['tiny/ndcg_at_10']:.4f} | {at_4['tiny/ndcg_at_10']:.4f} |" \
        in text


def test_last_checkpoint_card_gets_scores_evaluated_after_the_save(trained_run: Path, tmp_path: Path) -> None:
    """The final save comes before the final evaluation: its card says so, and a rewrite picks the scores up."""
    import shutil

    from huggingface_hub import ModelCard

    from trainer.models.card import write_model_card

    last = trained_run / "checkpoints" / "step-000005"
    assert ModelCard.load(last / "README.md").data.eval_results is None
    assert "No evaluation results for this checkpoint (step 5)" in (last / "README.md").read_text()
    copy = tmp_path / "runs" / "pub"  # rewrite a copy: the module's run stays as the loop left it
    shutil.copytree(trained_run, copy)
    write_model_card(copy / "checkpoints" / "step-000005")
    at_5 = [json.loads(line) for line in (trained_run / "eval.jsonl").read_text().splitlines()][-1]
    assert at_5["step"] == 5
    results = ModelCard.load(copy / "checkpoints" / "step-000005" / "README.md").data.eval_results
    assert {r.metric_type: r.metric_value for r in results}["ndcg_at_10"] == pytest.approx(at_5["tiny/ndcg_at_10"])


def test_no_machine_path_in_any_checkpoint_file(trained_run: Path, tiny_model: Path, tiny_data: dict[str, Path],
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    paths = machine_paths(tmp_path_factory.getbasetemp(), trained_run, tiny_model, tiny_data["train"])
    for ckpt in sorted((trained_run / "checkpoints").iterdir()):
        assert leaks(ckpt, paths) == []
        meta = json.loads((ckpt / "embedstill.json").read_text())
        assert meta["run"] == "../.." and meta["base_model"] is None and meta["base_model_name"] == tiny_model.name
    from trainer.exporting.card import find_run_dir

    assert find_run_dir(ckpt, meta) == ckpt / "../.."  # the relative run still leads to the run


def test_lora_adapter_and_merged_metadata_name_no_machine_path(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.models import Encoder
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.lora import apply_lora

    run = tmp_path / "run"
    encoder = apply_lora(Encoder.from_pretrained(str(tiny_model)),
                         {"enabled": True, "r": 2, "alpha": 4, "dropout": 0.0, "target_modules": None})
    ckpt = save_checkpoint(encoder, run / "checkpoints" / "step-000001", {"step": 1, "run": str(run)})
    merged = save_checkpoint(Encoder.from_pretrained(str(ckpt)), run / "merged", {
        "merged": {"ratio": 0.5, "base": str(tiny_model), "adapted": str(ckpt)}, "run": str(run)})
    paths = machine_paths(tmp_path, tiny_model)
    assert leaks(ckpt, paths) == [] and leaks(merged, paths) == []
    adapter = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] is None  # no Hub id known for the random model
    meta = json.loads((merged / "embedstill.json").read_text())
    assert meta["merged"] == {"ratio": 0.5, "base": tiny_model.name, "adapted": "../checkpoints/step-000001"}
    assert meta["run"] == ".." and meta["base_model_name"] == tiny_model.name  # the base of the checkpoint it loaded


def test_bundled_base_model_is_named_by_its_hub_id(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from trainer.assets import AssetMissing, minilm
    from trainer.models import Encoder, EncoderSpec
    from trainer.models.checkpoint import save_checkpoint

    try:
        source = minilm()
    except AssetMissing:
        pytest.skip("the bundled MiniLM package is not installed")
    run = tmp_path / "run"
    run.mkdir()
    # The run's config as the loop writes it: resolved, so it holds the bundled folder's absolute path.
    (run / "config.yaml").write_text(f"model:\n  name_or_path: {source}\ndata:\n  train_files: [{ROOT}/x.jsonl]\n")
    encoder = Encoder.from_pretrained(str(source), EncoderSpec(max_length_query=8, max_length_passage=16))
    ckpt = save_checkpoint(encoder, run / "checkpoints" / "step-000001", {"step": 1, "run": str(run)})
    meta = json.loads((ckpt / "embedstill.json").read_text())
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    data = ModelCard.load(ckpt / "README.md").data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.license == "apache-2.0" and data.language == "en"  # read from the bundled folder's own card
    assert "name_or_path: sentence-transformers/all-MiniLM-L6-v2" in (ckpt / "README.md").read_text()
    assert leaks(ckpt, machine_paths(tmp_path, source)) == []


def test_hub_id_comes_from_the_models_own_files(tmp_path: Path) -> None:
    from trainer import assets
    from trainer.models.provenance import hub_id

    assert hub_id("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"  # given as a Hub id
    cached = tmp_path / "hub" / "models--intfloat--e5-small-v2" / "snapshots" / "abc123"
    cached.mkdir(parents=True)
    assert hub_id(cached) == "intfloat/e5-small-v2"  # the Hugging Face cache layout
    own = tmp_path / "own"
    own.mkdir()
    (own / "README.md").write_text("model = SentenceTransformer('org/name')\nAutoModel.from_pretrained(\"org/name\")\n")
    assert hub_id(own) == "org/name"  # the usage code of its own card
    (own / "README.md").write_text("SentenceTransformer('org/a')\nSentenceTransformer('org/b')\n")
    assert hub_id(own) is None  # two ids: no guess
    (own / "README.md").write_text('SentenceTransformer("sentence_transformers_model_id")\n')
    assert hub_id(own) is None  # a template placeholder is not an id
    assert hub_id(tmp_path / "hub") is None and hub_id(str(tmp_path / "missing")) is None
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "embedstill.json").write_text(json.dumps({"base_model": "org/name"}))
    assert hub_id(ckpt) == "org/name"  # training continued from a checkpoint: its base
    assert hub_id("") is None  # an encoder built in memory
    teacher = assets.cache_dir() / "all-mpnet-base-v2"
    if teacher.exists():
        assert hub_id(teacher) == "sentence-transformers/all-mpnet-base-v2"


def test_card_lists_only_hub_datasets(tmp_path: Path) -> None:
    from trainer.models.card import card_data

    local = tmp_path / "mine.jsonl"
    local.write_text("{}\n")
    data = {"train_files": ["BeIR/scifact", "news/train.jsonl", str(local), "sentence-transformers/gooaq"],
            "format": "hf"}
    meta = {"encoder": {}, "base_model": None}
    assert card_data(meta, {"data": data}, [], "m").datasets == ["BeIR/scifact", "sentence-transformers/gooaq"]
    assert card_data(meta, {"data": {"train_files": ["news/train.jsonl"]}}, [], "m").datasets is None


def test_sentence_transformers_reads_the_per_side_lengths(tiny_model: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from trainer.models import Encoder, EncoderSpec, PromptSpec
    from trainer.models.checkpoint import save_checkpoint

    spec = EncoderSpec(max_length_query=8, max_length_passage=16,
                       prompts=PromptSpec(query_prefix="query : ", passage_prefix="passage : ",
                                          instruction_template="instruct : {instruction} query : {text}",
                                          instructions={"news": "the news"}))
    folder = save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), tmp_path / "ckpt", {"step": 1})
    ours = Encoder.from_pretrained(str(folder))
    st = SentenceTransformer(str(folder), device="cpu")
    texts = [LONG, "w1 w2"]
    np.testing.assert_allclose(st.encode_query(texts), ours.encode(texts, side="query"), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(texts), ours.encode(texts, side="passage"), atol=1e-5)
    np.testing.assert_allclose(st.encode_query(texts, prompt_name="news"),
                               ours.encode(texts, side="query", task="news"), atol=1e-5)
    # A plain encode truncates at max_seq_length (the passage length), as the card says.
    plain = st.encode([LONG], prompt_name="query")
    assert np.abs(plain - ours.encode([LONG], side="query")).max() > 1e-3


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


def test_checkpoint_folders_follow_the_umask(tiny_model: Path, tmp_path: Path, trained_run: Path,
                                             umask_022: None) -> None:
    from trainer.models import Encoder
    from trainer.models.checkpoint import atomic_dir, save_checkpoint

    folder = save_checkpoint(Encoder.from_pretrained(str(tiny_model)), tmp_path / "ckpt", {"step": 1})
    assert _modes(folder) == {("dir", 0o755), ("file", 0o644)}
    for ckpt in (trained_run / "checkpoints").iterdir():  # saved by the training loop
        assert _modes(ckpt) == {("dir", 0o755), ("file", 0o644)}
    os.umask(0o027)
    out = atomic_dir(tmp_path / "other", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert _modes(out) == {("dir", 0o750), ("file", 0o640)}
    os.umask(0o022)
    out = atomic_dir(tmp_path / "other", lambda tmp: (tmp / "b.txt").write_text("b"))  # replacing one
    assert _modes(out) == {("dir", 0o755), ("file", 0o644)} and sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "other"]  # no temporary folder left

