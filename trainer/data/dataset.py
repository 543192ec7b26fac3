"""Training data: loading, deterministic sampling, duplicate-free batches, collation.

    pytest tests/test_data.py

Each epoch, example ``i`` draws one positive and ``k`` negatives from ``rng(seed, epoch, i)``, so any process
(or a resumed run) reproduces the same draw without shared state. ``UniqueBatchSampler`` builds *global*
batches (all processes together) in which no passage text occurs twice and no example's positive appears as
another example's passage (a false in-batch negative); each process takes its slice of every global batch.
Rows that share a query text share their positives: every positive of the query text is a positive of each
of them, in the batch plan (they never meet in one batch) and in the loss's masking (``positive_ids``).
Rows with a ``label`` (label tasks: classification or clustering as "same label" retrieval) carry a label id, and
their positives carry it too: candidates of a query with the same task and label are masked out of the loss like
a positive of the same query text (``query_labels`` / ``passage_labels``). A task may have several instruction
paraphrases (``instructions``): each row without its own instruction draws one from ``rng(seed, epoch, i, 1)``.
Passages of a symmetric task (``symmetric_tasks``) are encoded as queries, with the row's instruction.
Batches are planned from the data as loaded (re-mining replaces negatives, never the plan), so each epoch's
batches, and the schedule's length, depend on the data files and the seed alone.
"""
from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from trainer.data.batch import Batch
from trainer.data.formats import check_columns
from trainer.data.labels import is_table_row, pair_label_rows
from trainer.data.mixture import Mixture
from trainer.data.schema import Example, LoadReport
from trainer.data.sources import SourceOptions, read_source


def load_examples(files: Sequence[str], fmt: str = "jsonl", on_error: str = "raise",
                  max_rows: Optional[int] = None, streaming: bool = False,
                  max_rows_per_file: Optional[int] = None, *, columns: Optional[Mapping[str, str]] = None,
                  hf_config: Optional[str] = None, hf_split: str = "train", hf_revision: Optional[str] = None,
                  source_rows: Optional[Sequence[Optional[int]]] = None) -> tuple[list[Example], LoadReport]:
    """Read and validate every row of the sources ``files`` (see ``trainer.data.sources``: JSONL, data files and
    folders of them, ``save_to_disk`` folders, Hub ids; ``fmt`` auto | jsonl | hf). A mixture: the first
    ``max_rows_per_file`` rows of each source, or ``source_rows[i]`` of source ``i`` (None = all; the smaller cap
    wins), at most ``max_rows`` in all. The report counts the rows each source contributed."""
    options = SourceOptions(fmt=fmt, on_error=on_error, streaming=streaming, columns=check_columns(columns),
                            hf_config=hf_config, hf_split=hf_split, hf_revision=hf_revision)
    return read_examples(files, options, source_caps(len(files), source_rows, max_rows_per_file), max_rows)


def iter_rows(files: Sequence[str], options: SourceOptions, report: LoadReport,
              caps: Sequence[Optional[int]], max_rows: Optional[int]) -> Iterator[tuple[int, int, Example]]:
    """(source index, row number in it, row) of every row in order; source ``i`` capped at ``caps[i]`` rows, all
    of them at ``max_rows``."""
    taken_all = 0
    for source, (file, cap) in enumerate(zip(files, caps)):
        rows = read_source(str(file), options, report) if cap != 0 else iter(())
        for number, example in enumerate(itertools.islice(rows, cap), start=1):
            yield source, number, example
            taken_all += 1
            if max_rows is not None and taken_all >= max_rows:
                return


def read_examples(files: Sequence[str], options: SourceOptions, caps: Sequence[Optional[int]],
                  max_rows: Optional[int]) -> tuple[list[Example], LoadReport]:
    """Every row ``iter_rows`` yields, in memory, (text, label) table rows paired by label (``trainer.data.labels``);
    the report lists the rows of each source read."""
    report = LoadReport()
    examples: list[Example] = []
    origins: list[Optional[str]] = []  # the source of each table row (the task it is paired in)
    taken = [0] * len(files)
    for source, _, example in iter_rows(files, options, report, caps, max_rows):
        examples.append(example)
        origins.append(str(files[source]) if is_table_row(example) else None)
        taken[source] += 1
    if any(origins):
        examples = pair_label_rows(examples, origins, report)
    last = len(files) - 1
    if max_rows is not None and len(examples) >= max_rows:  # the sources after the one that reached it are unread
        last = max(i for i, n in enumerate(taken) if n)
    report.sources = [(str(files[i]), taken[i]) for i in range(last + 1)]
    if not examples:
        raise ValueError(f"no usable training rows in {list(files)} ({report.summary()})")
    return examples, report


def source_caps(count: int, source_rows: Optional[Sequence[Optional[int]]],
                max_rows_per_file: Optional[int]) -> list[Optional[int]]:
    """Rows read from each of ``count`` sources: the smaller of ``source_rows[i]`` and ``max_rows_per_file``."""
    if source_rows is not None and len(source_rows) != count:
        raise ValueError(f"data.source_rows has {len(source_rows)} entries for {count} data.train_files: "
                         "give one count (or null for all rows) per source")
    caps = []
    for i in range(count):
        given = [c for c in (max_rows_per_file, None if source_rows is None else source_rows[i]) if c is not None]
        caps.append(min(given) if given else None)
    return caps


def source_options(cfg: Any) -> tuple[SourceOptions, list[Optional[int]]]:
    """How a ``data`` config's sources are read, and each source's row cap (configs saved before an option
    existed read its default)."""
    source_rows = cfg.get("source_rows")
    options = SourceOptions(fmt=cfg.get("format", "auto"), on_error=cfg.get("on_error", "raise"),
                            streaming=bool(cfg.get("streaming", False)), columns=check_columns(cfg.get("columns")),
                            hf_config=cfg.get("hf_config"), hf_split=cfg.get("hf_split") or "train",
                            hf_revision=cfg.get("hf_revision"))
    caps = source_caps(len(cfg.train_files), None if source_rows is None else list(source_rows),
                       cfg.get("max_rows_per_file"))
    return options, caps


def load_data_config(cfg: Any) -> tuple[list[Example], LoadReport]:
    """Every row of a ``data`` config's sources, in memory (``data.streaming``: ``trainer.data.stream``)."""
    return read_examples(list(cfg.train_files), *source_options(cfg), cfg.get("max_rows"))


def text_id(text: str) -> int:
    """A stable 63-bit id of a text (equal on every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


@dataclass
class Sample:
    index: int
    query: str
    passages: list[str]  # [positive, negative_1, ..., negative_k]
    task: Optional[str]
    instruction: Optional[str]
    scores: Optional[list[float]]  # teacher scores of ``passages`` when the data carries them
    positive_ids: tuple[int, ...] = ()  # text ids of every positive of the query text (all rows sharing it)
    label_id: int = -1  # id of (task, label) for label tasks; -1 = no label
    symmetric: bool = False  # passages get the query side and the row's instruction


NO_LABEL = -1  # label id of rows without a label and of hard negatives (their label is unknown)


def label_id(task: Optional[str], label: Optional[str]) -> int:
    """A stable id of (task, label), >= 0; ``NO_LABEL`` without a label. Two tasks' labels never collide."""
    return NO_LABEL if label is None else text_id(f"{task or ''}\x1f{label}")


def query_positives(examples: Sequence[Example]) -> list[tuple[str, ...]]:
    """Per example, every positive of its query text: rows sharing a query text share their positives."""
    by_query: dict[str, dict[str, None]] = defaultdict(dict)
    for ex in examples:
        by_query[ex.query].update(dict.fromkeys(ex.pos))
    shared = {query: tuple(texts) for query, texts in by_query.items()}
    return [shared[ex.query] for ex in examples]


def draw_passages(ex: Example, rng: np.random.Generator, k: int,
                  available: Optional[int] = None) -> tuple[int, list[int]]:
    """The positive and ``k`` negatives (indices into ``ex.pos`` / the first ``available`` of ``ex.neg``) one row
    uses: without replacement when there are enough negatives, else with (as Tevatron does)."""
    pos = int(rng.integers(len(ex.pos)))
    if k == 0:
        return pos, []
    available = len(ex.neg) if available is None else available
    return pos, [int(n) for n in rng.choice(available, size=k, replace=available < k)]


def pick_instruction(ex: Example, choices: Optional[Sequence[str]], seed: int, epoch: int, index: int) -> Optional[str]:
    """The row's own instruction, else one of its task's paraphrases (``choices``) for ``epoch``, else None."""
    if ex.instruction or not choices:
        return ex.instruction
    # A stream of its own (the trailing 1): adding paraphrases never changes the positives and negatives drawn.
    rng = np.random.default_rng([seed, epoch, index, 1])
    return choices[int(rng.integers(len(choices)))]


class ContrastiveDataset(torch.utils.data.Dataset):
    """Map-style dataset; ``set_epoch`` changes which positive and negatives each example draws."""

    def __init__(self, examples: list[Example], num_negatives: int = 0, seed: int = 0,
                 instructions: Optional[dict[str, list[str]]] = None,
                 symmetric_tasks: Sequence[str] = (), task_homogeneous: bool = False,
                 mixture: Optional[Mixture] = None) -> None:
        """``instructions``: task -> paraphrases a row draws from per epoch (rows' own instructions win);
        ``symmetric_tasks``: tasks whose passages are encoded as queries, with the instruction;
        ``task_homogeneous``: batches hold one task, so a task whose rows carry no negatives at all (a label task
        beside mined retrieval pairs) trains on in-batch negatives while the others draw ``num_negatives``;
        ``mixture``: each source's share of every epoch (``data.source_weights``); None = every row once."""
        self.examples = examples
        self.mixture = mixture
        self.num_negatives = num_negatives
        self.seed = seed
        self.epoch = 0
        self.instructions = {task: list(texts) for task, texts in (instructions or {}).items() if texts}
        self.symmetric_tasks = frozenset(symmetric_tasks)
        self.label_ids = [label_id(ex.task, ex.label) for ex in examples]
        self.positives = query_positives(examples)  # per example: every positive of its query text
        ids = {text: text_id(text) for texts in set(self.positives) for text in texts}
        self.positive_ids = [tuple(ids[t] for t in texts) for texts in self.positives]
        # The negatives as loaded: batch plans are drawn from these, whatever re-mining puts in ``ex.neg`` later.
        self.planned_negatives = [tuple(ex.neg) for ex in examples]
        self.in_batch_only_tasks = self.tasks_without_negatives(task_homogeneous) if num_negatives > 0 else set()

    def tasks_without_negatives(self, task_homogeneous: bool) -> set[Optional[str]]:
        """Tasks none of whose rows has negatives: allowed with task-homogeneous batches (every batch then has one
        shape: 1 + num_negatives passages per query, or 1); otherwise every row needs negatives."""
        with_negatives = {ex.task for ex in self.examples if ex.neg}
        missing = [i for i, ex in enumerate(self.examples)
                   if not ex.neg and (not task_homogeneous or ex.task in with_negatives)]
        if missing:
            first = self.examples[missing[0]]
            where = f" of task {first.task!r}, whose other rows have negatives" if task_homogeneous else ""
            raise ValueError(f"data.num_negatives={self.num_negatives} but {len(missing)} rows{where} have no "
                             f"negatives (first: row {missing[0] + 1}, query {first.query[:60]!r}); mine negatives "
                             "(python -m trainer.mine), set data.num_negatives=0, or, for a task without any "
                             "negatives, data.task_homogeneous=true")
        return {ex.task for ex in self.examples if not ex.neg}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_rows(self, epoch: int) -> list[int]:
        """Example indices an epoch trains on (before shuffling): every row once, or the mixture's draw."""
        return list(range(len(self.examples))) if self.mixture is None else self.mixture.indices(self.seed, epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def draw(self, index: int, epoch: Optional[int] = None, num_neg: Optional[int] = None) -> tuple[int, list[int]]:
        """Indices of the positive and the negatives example ``index`` uses in ``epoch`` (out of ``num_neg``
        negatives; default: the row's current list)."""
        ex = self.examples[index]
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        k = 0 if ex.task in self.in_batch_only_tasks else self.num_negatives
        return draw_passages(ex, rng, k, num_neg)

    def __getitem__(self, index: int) -> Sample:
        ex = self.examples[index]
        pos, negs = self.draw(index)
        scores = None
        if ex.pos_scores is not None and (not negs or ex.neg_scores is not None):
            scores = [ex.pos_scores[pos]] + [ex.neg_scores[n] for n in negs]  # type: ignore[index]
        return Sample(index=index, query=ex.query, passages=[ex.pos[pos]] + [ex.neg[n] for n in negs],
                      task=ex.task, instruction=self.instruction(index), scores=scores,
                      positive_ids=self.positive_ids[index], label_id=self.label_ids[index],
                      symmetric=ex.task in self.symmetric_tasks)

    def instruction(self, index: int, epoch: Optional[int] = None) -> Optional[str]:
        """The row's own instruction, else one of its task's paraphrases drawn for ``epoch``, else None (the
        tokenizer then uses the task's instruction, if any)."""
        ex = self.examples[index]
        return pick_instruction(ex, self.instructions.get(ex.task or ""), self.seed,
                                self.epoch if epoch is None else epoch, index)

    def batch_keys(self, index: int, epoch: int) -> set[str]:
        """Texts that must not be shared with another example of the same batch: every positive of its query
        text and the negatives it draws in ``epoch`` from its negatives as loaded."""
        planned = self.planned_negatives[index]
        _, negs = self.draw(index, epoch, len(planned))
        return set(self.positives[index]) | {planned[n] for n in negs}


class UniqueBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields this process's part of each global batch; global batches hold no text twice.

    Args:
        batch_size: per process; the global batch is ``batch_size * world_size``.
        task_homogeneous: every global batch from one task.
        open_batches: how many batches may be filled at once; an example that clashes with every open batch
            waits for the next one (clashes are rare, so a small window keeps the order close to the shuffle).
    """

    def __init__(self, dataset: ContrastiveDataset, batch_size: int, seed: int = 0, world_size: int = 1,
                 rank: int = 0, task_homogeneous: bool = False, open_batches: int = 8) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.global_size = batch_size * world_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.task_homogeneous = task_homogeneous
        self.open_batches = open_batches
        self.epoch = 0
        self.start_batch = 0
        self._cache: dict[int, list[list[int]]] = {}  # the last epoch built
        self._sizes: dict[int, int] = {}  # epoch -> number of global batches (every epoch built so far)

    @property
    def dropped(self) -> int:
        """Examples left out of the current epoch (clashing with every open batch, or in an incomplete batch)."""
        return self.dropped_in(self.epoch)

    def dropped_in(self, epoch: int) -> int:
        return len(self.dataset) - self.global_size * self.num_batches(epoch)

    def num_batches(self, epoch: int) -> int:
        """Global batches of ``epoch`` (it differs between epochs: clashes depend on the epoch's draws)."""
        if epoch not in self._sizes:
            self.global_batches(epoch)
        return self._sizes[epoch]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's batches; ``start_batch`` skips batches already trained on (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch
        self.dataset.set_epoch(epoch)

    def global_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            self._cache = {epoch: self._build(epoch)}
            self._sizes[epoch] = len(self._cache[epoch])
        return self._cache[epoch]

    def _build(self, epoch: int) -> list[list[int]]:
        rows = self.dataset.epoch_rows(epoch)
        order = [rows[j] for j in np.random.default_rng([self.seed, epoch]).permutation(len(rows))]
        groups: dict[Any, list[int]] = defaultdict(list)
        for i in order:
            groups[self.dataset.examples[i].task if self.task_homogeneous else None].append(i)
        batches: list[list[int]] = []
        for key in sorted(groups, key=str):
            batches += self._fill(groups[key], epoch)
        if self.task_homogeneous:
            # Interleave tasks: shuffle the order of whole batches.
            perm = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
            batches = [batches[j] for j in perm]
        return batches

    def _fill(self, indices: list[int], epoch: int) -> list[list[int]]:
        """Full global batches of ``indices``; an example clashing with every open batch is left out."""
        done: list[list[int]] = []
        open_: list[tuple[list[int], set[str]]] = []
        for i in indices:
            keys = self.dataset.batch_keys(i, epoch)
            target = next((b for b in open_ if not (b[1] & keys)), None)
            if target is None:
                if len(open_) >= self.open_batches:
                    continue  # clashes with every open batch: left out this epoch
                target = ([], set())
                open_.append(target)
            target[0].append(i)
            target[1].update(keys)
            if len(target[0]) == self.global_size:
                done.append(target[0])
                open_.remove(target)
        return done

    def __len__(self) -> int:
        return self.num_batches(self.epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches(self.epoch)[self.start_batch:]:
            yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


class Collator:
    """Samples -> token features for queries (B, Tq) and passages (B*(1+k), Tp), grouped per query."""

    def __init__(self, tokenize: Any) -> None:
        self.tokenize = tokenize  # Encoder.tokenize (only the tokenizer and the spec are used)

    def __call__(self, samples: list[Sample]) -> Batch:
        passages = [p for s in samples for p in s.passages]  # query-major: [q0 pos, q0 negs..., q1 pos, ...]
        instructions, tasks = [s.instruction for s in samples], [s.task for s in samples]
        scores = None
        if all(s.scores is not None for s in samples):  # scores that came with the data
            scores = torch.tensor([s.scores for s in samples], dtype=torch.float32)  # (B, 1+k)
        return Batch(
            query=self.tokenize([s.query for s in samples], "query", instructions=instructions, tasks=tasks),
            passage=self._passages(samples, passages),
            index=torch.tensor([s.index for s in samples], dtype=torch.long),
            query_ids=torch.tensor([text_id(s.query) for s in samples], dtype=torch.long),
            passage_ids=torch.tensor([text_id(p) for p in passages], dtype=torch.long),
            positive_ids=positive_matrix([s.positive_ids for s in samples]),
            query_labels=torch.tensor([s.label_id for s in samples], dtype=torch.long),
            # A positive shares its query's label; a hard negative's label is unknown.
            passage_labels=torch.tensor([s.label_id if j == 0 else NO_LABEL
                                         for s in samples for j in range(len(s.passages))], dtype=torch.long),
            teacher_scores=scores)

    def _passages(self, samples: list[Sample], passages: list[str]) -> dict[str, Any]:
        """Passage features; a symmetric task's passages are queries of the same task (same side and instruction)."""
        symmetric = {s.symmetric for s in samples}
        if symmetric == {False}:
            return self.tokenize(passages, "passage")
        if len(symmetric) > 1:
            raise ValueError(f"a batch mixes symmetric and asymmetric tasks ({sorted({str(s.task) for s in samples})}):"
                             " set data.task_homogeneous=true when model.symmetric_tasks is set")
        return self.tokenize(passages, "query", instructions=[s.instruction for s in samples for _ in s.passages],
                             tasks=[s.task for s in samples for _ in s.passages])


def positive_matrix(ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, P) text ids of each query's positives, padded with -1 (text ids are >= 0)."""
    out = torch.full((len(ids), max((len(row) for row in ids), default=0) or 1), -1, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out
