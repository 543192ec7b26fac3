"""(text, label) tables as label tasks: classification data learned as "same label" retrieval (E5, BGE).

    pytest tests/test_data_sources.py -k label_table

A table row arrives from the readers as ``Example(query=text, pos=[], label=label)``: its positives are other texts
of its label, known only once the whole source is read. ``pair_label_rows`` gives each such text the next
``POSITIVES`` texts of its label in reading order (cyclically; each epoch draws one of them) and names the task
after its source, so the in-batch mask (same task and label: not a negative) applies within that table only.
Labels with a single text have nothing to pair with: they are left out and counted in the load report.
Streaming cannot pair texts it has not read yet, so ``trainer.data.stream`` refuses table rows.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from trainer.data.schema import Example, LoadReport

POSITIVES = 4  # same-label positives per row, as data/prepare_text.py builds the bundled label tasks


def is_table_row(example: Example) -> bool:
    """A (text, label) row still waiting for positives (a validated row of any other format has one at least)."""
    return not example.pos and example.label is not None


def task_name(source: str) -> str:
    """The task a table's rows belong to: its file or folder name without suffixes, or the Hub id's last part."""
    name = Path(source.rstrip("/")).name
    return name.split(".")[0] or name


def following_texts(examples: Sequence[Example], rows: Sequence[int], k: int, count: int) -> list[str]:
    """Up to ``count`` distinct texts after ``rows[k]`` in its label (cyclically), none equal to its own."""
    own, found = examples[rows[k]].query, []
    for j in range(1, len(rows)):
        text = examples[rows[(k + j) % len(rows)]].query
        if text != own and text not in found:
            found.append(text)
            if len(found) == count:
                break
    return found


def pair_label_rows(examples: Sequence[Example], sources: Sequence[Optional[str]], report: LoadReport,
                    positives: int = POSITIVES) -> list[Example]:
    """``examples`` with every table row given same-label positives; ``sources[i]`` names the source of row
    ``i``. Other rows pass through unchanged, in order; paired rows keep their place among them."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if is_table_row(ex):
            task = ex.task or task_name(sources[i] or "table")
            groups[(task, str(ex.label))].append(i)
    if not groups:
        return list(examples)
    paired: dict[int, Example] = {}
    for (task, label), rows in groups.items():
        for k, i in enumerate(rows):
            ex = examples[i]
            others = following_texts(examples, rows, k, positives)
            if others:  # a label whose texts are all this one text has nothing to pair it with
                paired[i] = Example(query=ex.query, pos=others, task=task, instruction=ex.instruction,
                                    label=ex.label)
    tasks = sorted({task for task, _ in groups})
    left = [i for rows in groups.values() for i in rows if i not in paired]
    report.note(f"label tables ({', '.join(tasks)}): {len(paired)} rows paired with texts of their label as "
                "same-label retrieval" + (f", {len(left)} left out with no other text of their label (first: "
                                          f"{examples[left[0]].label!r})" if left else ""))
    return [paired[i] if i in paired else ex for i, ex in enumerate(examples) if i in paired or not is_table_row(ex)]
