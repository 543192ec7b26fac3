"""Streaming training data (``data.streaming=true``): rows are read lazily, shuffled in a seeded buffer and cut into
global batches, so memory holds the buffer and one batch, never the whole data.

    python -m trainer.train data.streaming=true data.shuffle_buffer=10000 'data.train_files=[big.jsonl]'
    pytest tests/test_streaming.py

Epoch ``e`` reads the sources in order (``data.source_rows`` / ``max_rows`` caps apply) through a buffer of
``shuffle_buffer`` rows: once it is full, each new row takes the place of a buffered row drawn from rng(seed, e),
which is emitted; at the end the buffer is emptied in an order drawn from the same generator. Emitted rows are
numbered n = 0, 1, ... within the epoch; row n draws its positive, negatives and instruction paraphrase from
rng(seed, e, n) as the in-memory data does from a row's index (``trainer.data.dataset.draw_passages``). Global batch
b holds rows [b*G, (b+1)*G) (G = per-process batch x processes), each process takes its slice, and the partial
last batch is left out. A counting pass at start-up (which also validates every row) gives each epoch's length, so
the schedule is known. Resuming at (epoch e, batch b) replays epoch e's stream and skips b*G rows before any of them
is tokenized: the run continues with exactly the rows the stopped run would have seen.

What needs the whole data in memory is refused with streaming, naming the setting: a teacher that embeds or scores
every training text before the first step (``teacher=precomputed`` works: its scores ride in the rows),
``data.task_homogeneous``, ``data.source_weights`` and ``train.remine_every``. Two more differences from the
in-memory path: batches are not planned free of duplicate texts (the loss's passage-id masking keeps an in-batch
copy of a query's positive from counting as its negative), and a row's positives are its own (rows sharing a query
text are not grouped).
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from trainer.data.dataset import Sample, draw_passages, iter_rows, label_id, pick_instruction, text_id
from trainer.data.labels import is_table_row
from trainer.data.schema import Example, LoadReport
from trainer.data.sources import SourceOptions

PLAN_ROWS = 1000  # rows kept for the memory planner's length statistics


def buffer_shuffle(rows: Iterator[Example], size: int, rng: np.random.Generator) -> Iterator[Example]:
    """Rows in a shuffled order that holds at most ``size`` of them at once (the order ``rng`` draws)."""
    buffer: list[Example] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        slot = int(rng.integers(size))
        buffer[slot], row = row, buffer[slot]
        yield row
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


class StreamingData(torch.utils.data.IterableDataset):
    """Yields this process's ``list[Sample]`` of each global batch; also the sampler the training loop drives
    (``set_epoch``, ``num_batches``, ``dropped_in``, ``dataset.examples``)."""

    def __init__(self, files: Sequence[str], options: SourceOptions, *, caps: Sequence[Optional[int]],
                 max_rows: Optional[int], num_negatives: int, seed: int, batch_size: int, world_size: int,
                 rank: int, buffer_size: int, instructions: Optional[dict[str, list[str]]] = None,
                 symmetric_tasks: Sequence[str] = ()) -> None:
        if buffer_size < 1:
            raise ValueError(f"data.shuffle_buffer must be >= 1, got {buffer_size}")
        self.files, self.options, self.caps, self.max_rows = list(files), options, list(caps), max_rows
        self.num_negatives, self.seed, self.buffer_size = num_negatives, seed, buffer_size
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.global_size = batch_size * world_size
        self.instructions = {task: list(texts) for task, texts in (instructions or {}).items() if texts}
        self.symmetric_tasks = frozenset(symmetric_tasks)
        self.epoch, self.start_batch = 0, 0
        self.report = LoadReport()
        self.examples: list[Example] = []  # the first PLAN_ROWS rows: the planner's sample
        self.rows = self._count()

    def _rows(self, report: LoadReport) -> Iterator[Example]:
        return (example for _, _, example in iter_rows(self.files, self.options, report, self.caps, self.max_rows))

    def _count(self) -> int:
        """One pass over the sources: validates every row (errors name file, line and field) and counts them."""
        count = 0
        for count, (source, number, example) in enumerate(
                iter_rows(self.files, self.options, self.report, self.caps, self.max_rows), start=1):
            if is_table_row(example):
                raise ValueError(f"{self.files[source]}: row {number}: a (text, label) table row: its positives are "
                                 "other texts of its label, found only by reading the whole table, which "
                                 "data.streaming=true does not do: load it with data.streaming=false")
            if self.num_negatives and not example.neg:
                raise ValueError(f"{self.files[source]}: row {number}: neg: empty, but data.num_negatives={self.num_negatives} "
                                 "draws that many per row: mine negatives first (python -m trainer.mine), or set "
                                 "data.num_negatives=0")
            if count <= PLAN_ROWS:
                self.examples.append(example)
        self.report.rows = count
        if count == 0:
            raise ValueError(f"no usable training rows in {self.files} ({self.report.summary()})")
        return count

    @property
    def dataset(self) -> "StreamingData":
        return self

    def num_batches(self, epoch: int) -> int:
        return self.rows // self.global_size

    def dropped_in(self, epoch: int) -> int:
        return self.rows - self.global_size * self.num_batches(epoch)

    def __len__(self) -> int:
        return self.num_batches(self.epoch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; ``start_batch`` global batches are skipped (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_rows(self, epoch: int) -> Iterator[Example]:
        """The epoch's rows in their shuffled order."""
        return buffer_shuffle(self._rows(LoadReport()), self.buffer_size, np.random.default_rng([self.seed, epoch]))

    def __iter__(self) -> Iterator[list[Sample]]:
        epoch, batches = self.epoch, self.num_batches(self.epoch)
        first = self.start_batch * self.global_size
        rows = itertools.islice(enumerate(self.epoch_rows(epoch)), first, batches * self.global_size)
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        while batch := list(itertools.islice(rows, self.global_size)):
            yield [self.sample(index, example, epoch) for index, example in (batch[i] for i in mine)]

    def sample(self, index: int, ex: Example, epoch: int) -> Sample:
        """Row ``index`` of ``epoch``'s stream as the collator's ``Sample`` (draws seeded by the index)."""
        pos, negs = draw_passages(ex, np.random.default_rng([self.seed, epoch, index]), self.num_negatives)
        scores = None
        if ex.pos_scores is not None and (not negs or ex.neg_scores is not None):
            scores = [ex.pos_scores[pos]] + [ex.neg_scores[n] for n in negs]  # type: ignore[index]
        instruction = pick_instruction(ex, self.instructions.get(ex.task or ""), self.seed, epoch, index)
        return Sample(index=index, query=ex.query, passages=[ex.pos[pos]] + [ex.neg[n] for n in negs],
                      task=ex.task, instruction=instruction, scores=scores,
                      positive_ids=tuple(text_id(t) for t in ex.pos), label_id=label_id(ex.task, ex.label),
                      symmetric=ex.task in self.symmetric_tasks)
