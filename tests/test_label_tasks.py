"""Label tasks and instructions as data: same-label candidates masked (contrastive and KL), a row's instruction
over its task's, instruction paraphrases drawn per row and epoch, symmetric tasks' passages as queries.

    pytest tests/test_label_tasks.py
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.data.batch import Batch
from trainer.data.dataset import NO_LABEL, Collator, ContrastiveDataset, label_id
from trainer.data.schema import DataError, Example, validate_row
from trainer.losses.infonce import InfoNCE
from trainer.losses.listwise_kl import ListwiseKL
from trainer.models.prompts import PromptSpec
from trainer.teachers.distill import candidate_scores


def record_tokenize(calls: list[dict[str, Any]]) -> Any:
    def tokenize(texts: list[str], side: str, instructions: Any = None, tasks: Any = None) -> dict[str, Any]:
        calls.append({"texts": list(texts), "side": side, "instructions": instructions, "tasks": tasks})
        return {}
    return tokenize


def test_schema_reads_labels_and_names_a_bad_one() -> None:
    assert validate_row({"query": "a", "pos": ["b"], "task": "t", "label": "fresh"}, "f:1").label == "fresh"
    assert validate_row({"query": "a", "pos": ["b"], "label": 3}, "f:1").label == "3"
    assert validate_row({"query": "a", "pos": ["b"]}, "f:1").label is None
    with pytest.raises(DataError, match=r"^f:7: label: must be a string or an integer, got list"):
        validate_row({"query": "a", "pos": ["b"], "label": ["x"]}, "f:7")
    with pytest.raises(DataError, match=r"^f:2: label: empty string"):
        validate_row({"query": "a", "pos": ["b"], "label": " "}, "f:2")


def test_label_ids_separate_tasks_and_mark_unlabelled_rows() -> None:
    assert label_id("sentiment", "fresh") == label_id("sentiment", "fresh") >= 0
    assert label_id("sentiment", "fresh") != label_id("movie", "fresh")
    assert label_id("news", None) == NO_LABEL


def labelled_batch() -> Batch:
    """Rows 0 and 1 share a label, row 2 has another, row 3 none; every row has one hard negative."""
    examples = [Example(query=f"q{i}", pos=[f"p{i}"], neg=[f"n{i}"], task="t", label=lab)
                for i, lab in enumerate(["a", "a", "b", None])]
    dataset = ContrastiveDataset(examples, num_negatives=1)
    return Collator(record_tokenize([]))([dataset[i] for i in range(4)])


def test_infonce_masks_same_label_in_batch_candidates_hand_computed() -> None:
    batch = labelled_batch()
    a = label_id("t", "a")
    assert batch.query_labels.tolist() == [a, a, label_id("t", "b"), NO_LABEL]
    # Passages [p0, n0, p1, n1, p2, n2, p3, n3]: positives carry their row's label, hard negatives none.
    assert batch.passage_labels.tolist() == [a, NO_LABEL, a, NO_LABEL, label_id("t", "b"), NO_LABEL,
                                                NO_LABEL, NO_LABEL]
    gen = torch.Generator().manual_seed(1)
    query = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(8, 6, generator=gen), dim=-1)
    tau = 0.1
    loss = InfoNCE(temperature=tau)(query, passages, batch.passage_ids, positive_ids=batch.positive_ids,
                                    query_ids=batch.query_ids, query_labels=batch.query_labels,
                                    passage_labels=batch.passage_labels)
    # By hand: row 0 loses p1 (column 2, same label), row 1 loses p0 (column 0); rows 2 and 3 keep all 8;
    # hard negatives stay for everyone.
    s = (query @ passages.T / tau).tolist()
    dropped = {0: {2}, 1: {0}, 2: set(), 3: set()}
    expected = 0.0
    for i in range(4):
        denominator = sum(math.exp(s[i][c]) for c in range(8) if c not in dropped[i])
        expected += -(s[i][2 * i] - math.log(denominator)) / 4
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    unmasked = InfoNCE(temperature=tau)(query, passages, batch.passage_ids)
    assert abs(float(unmasked) - expected) > 1e-3  # the label mask changes the loss


def test_symmetric_term_masks_queries_of_the_same_label() -> None:
    batch = labelled_batch()
    gen = torch.Generator().manual_seed(2)
    query = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(8, 6, generator=gen), dim=-1)
    loss = InfoNCE(temperature=0.1, symmetric=True)(
        query, passages, batch.passage_ids, query_labels=batch.query_labels,
        passage_labels=batch.passage_labels)
    q2p = query @ passages.T / 0.1  # (4, 8)
    q2p[0, 2] = q2p[1, 0] = float("-inf")
    p2q = passages[::2] @ query.T / 0.1  # (4, 4): p0 carries label a, so q1 is no negative of it, and back
    p2q[0, 1] = p2q[1, 0] = float("-inf")
    ce = torch.nn.functional.cross_entropy
    expected = (ce(q2p, torch.arange(4) * 2) + ce(p2q, torch.arange(4))) / 2
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)


def test_kl_candidates_drop_same_label_passages() -> None:
    batch = labelled_batch()
    gen = torch.Generator().manual_seed(3)
    query = torch.nn.functional.normalize(torch.randn(4, 6, generator=gen), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(8, 6, generator=gen), dim=-1)
    batch.teacher_query = torch.nn.functional.normalize(torch.randn(4, 5, generator=gen), dim=-1)
    batch.teacher_passage = torch.nn.functional.normalize(torch.randn(8, 5, generator=gen), dim=-1)
    student, teacher, labels = candidate_scores(query, passages, batch)
    assert torch.isinf(student[0, 2]) and torch.isinf(student[1, 0]) and int(torch.isinf(student).sum()) == 2
    value = ListwiseKL(0.1, 0.2, t2_scaling=False)(student, teacher, labels)
    # By hand: KL(p || q) over each row's kept candidates, each distribution renormalised over them.
    s, t = (query @ passages.T).tolist(), (batch.teacher_query @ batch.teacher_passage.T).tolist()
    dropped = {0: {2}, 1: {0}, 2: set(), 3: set()}
    expected = 0.0
    for i in range(4):
        kept = [c for c in range(8) if c not in dropped[i]]
        zs = sum(math.exp(s[i][c] / 0.1) for c in kept)
        zt = sum(math.exp(t[i][c] / 0.2) for c in kept)
        for c in kept:
            p, q = math.exp(t[i][c] / 0.2) / zt, math.exp(s[i][c] / 0.1) / zs
            expected += p * math.log(p / q) / 4
    assert float(value) == pytest.approx(expected, abs=1e-5)


def test_a_rows_own_instruction_wins_over_its_tasks() -> None:
    examples = [Example(query="q0", pos=["p0"], task="t", instruction="row's own"),
                Example(query="q1", pos=["p1"], task="t")]
    dataset = ContrastiveDataset(examples, instructions={"t": ["task first", "task second"]})
    for epoch in range(5):
        dataset.set_epoch(epoch)
        assert dataset[0].instruction == "row's own"
        assert dataset[1].instruction in {"task first", "task second"}
    spec = PromptSpec(instruction_template="I: {instruction} Q: {text}", instructions={"t": "task first"})
    assert spec.format("x", "query", spec.instruction_for("t", "row's own"))[0] == "I: row's own Q: x"
    assert spec.format("x", "query", spec.instruction_for("t", None))[0] == "I: task first Q: x"
    calls: list[dict[str, Any]] = []
    Collator(record_tokenize(calls))([dataset[0], dataset[1]])
    assert calls[0]["side"] == "query" and calls[0]["instructions"][0] == "row's own"


def test_paraphrases_are_drawn_per_row_and_epoch_deterministically() -> None:
    paraphrases = ["first", "second", "third"]
    examples = [Example(query=f"q{i}", pos=[f"p{i}"], task="t") for i in range(60)]

    def draws(seed: int, epoch: int) -> list[str]:
        dataset = ContrastiveDataset(examples, seed=seed, instructions={"t": paraphrases})
        dataset.set_epoch(epoch)
        return [dataset[i].instruction for i in range(len(examples))]  # type: ignore[misc]

    assert draws(0, 0) == draws(0, 0)  # any process, any resume: the same draw
    assert draws(0, 0) != draws(0, 1) and draws(0, 0) != draws(1, 0)
    assert set(draws(0, 0)) == set(paraphrases)
    # Without paraphrases the row keeps None and the tokenizer uses the task's instruction.
    assert ContrastiveDataset(examples)[0].instruction is None


def test_evaluation_uses_the_first_paraphrase_and_the_checkpoint_stores_all(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.models import Encoder, EncoderSpec
    from trainer.models.checkpoint import save_checkpoint

    prompts = PromptSpec.from_mapping({"instruction_template": "Instruct: {instruction}\nQuery: {text}",
                                       "instructions": {"t": ["first", "second"], "u": "only"},
                                       "symmetric_tasks": ["t"]})
    assert prompts.instructions == {"t": "first", "u": "only"}
    assert prompts.instruction_paraphrases == {"t": ["first", "second"]}
    assert prompts.sentence_transformers_prompts()["t"] == "Instruct: first\nQuery: "
    with pytest.raises(ValueError, match="model.instructions.v"):
        PromptSpec.from_mapping({"instructions": {"v": []}})
    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(prompts=prompts, exclude_prompt_from_pooling=True,
                                                                   max_length_query=24, max_length_passage=24))
    folder = save_checkpoint(encoder, tmp_path / "ckpt", {"task_instructions": prompts.instructions})
    stored = json.loads((folder / "embedstill.json").read_text())
    assert stored["encoder"]["prompts"]["instruction_paraphrases"] == {"t": ["first", "second"]}
    assert stored["encoder"]["prompts"]["symmetric_tasks"] == ["t"]
    assert Encoder.from_pretrained(str(folder)).spec.prompts == prompts
    # The model card lists the instructions and gives a call that encodes as training did.
    card = (folder / "README.md").read_text()
    assert "## Instructions" in card and "| `t` | `'first'` | `'second'` | yes |" in card
    assert "| `u` | `'only'` | - | no |" in card
    assert "embeddings = model.encode(texts, prompt='Instruct: first\\nQuery: ')" in card
    from sentence_transformers import SentenceTransformer

    texts = ["w1 w2 w3", "w4 w5"]
    st = SentenceTransformer(str(folder), device="cpu").encode(texts, prompt="Instruct: first\nQuery: ")
    ours = encoder.encode(texts, "query", task="t")
    assert abs(st - ours).max() < 1e-5


def test_symmetric_tasks_encode_passages_as_queries_with_the_instruction() -> None:
    examples = [Example(query=f"q{i}", pos=[f"p{i}"], task="sym" if i < 2 else "asym") for i in range(4)]
    dataset = ContrastiveDataset(examples, instructions={"sym": ["one", "two"]}, symmetric_tasks=["sym"])
    calls: list[dict[str, Any]] = []
    Collator(record_tokenize(calls))([dataset[0], dataset[1]])
    assert calls[1]["side"] == "query" and calls[1]["texts"] == ["p0", "p1"]
    assert calls[1]["instructions"] == calls[0]["instructions"] and calls[1]["tasks"] == ["sym", "sym"]
    Collator(record_tokenize(calls))([dataset[2], dataset[3]])
    assert calls[-1]["side"] == "passage"
    with pytest.raises(ValueError, match="task_homogeneous"):
        Collator(record_tokenize(calls))([dataset[0], dataset[2]])
