"""Data sources: where training rows come from, one module per kind, chosen from a plain ``data.train_files`` entry.

    python -m trainer.train 'data.train_files=[data/samples/st_triplets.csv,data/samples/saved]'

Kinds (``READERS`` of ``base.py``, filled by ``jsonl.py`` and ``hf.py`` as they are imported):

- ``jsonl``: our JSONL reader (line-precise messages); any row format of ``trainer.data.formats``;
- ``files``: one json/jsonl/csv/tsv/parquet file read through ``datasets.load_dataset`` (errors: ``path:row N``);
- ``disk``: a ``Dataset.save_to_disk`` folder (``state.json`` + ``dataset_info.json``, or ``dataset_dict.json``:
  then ``data.hf_split`` picks the split);
- ``hub``: a Hugging Face Hub id, ``load_dataset(id, data.hf_config, split=data.hf_split,
  revision=data.hf_revision)``.

An entry stays a plain string, so every existing config keeps working: ``data.format=auto`` (the default) detects
the kind from the suffix or the folder's content (a folder of data files reads each file, sorted, as its own
file so messages name it); ``jsonl`` reads every entry with our JSONL reader (as before: a folder is refused);
``hf`` reads files through ``datasets`` (json for any suffix but csv/tsv/parquet), as before.
A name that is not on disk and looks like ``owner/name`` is a Hub id; loading it offline fails with that said.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from trainer.data.schema import Example, LoadReport
from trainer.data.sources import hf, jsonl  # noqa: F401  (each registers its readers)
from trainer.data.sources.base import READERS, SourceOptions, register

__all__ = ["FORMATS", "READERS", "SourceOptions", "read_source", "register", "resolve"]

FORMATS = ("auto", "jsonl", "hf")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_saved_dataset(path: Path) -> bool:
    """A ``save_to_disk`` folder: a Dataset (state + info) or a DatasetDict (dataset_dict.json)."""
    return ((path / "state.json").is_file() and (path / "dataset_info.json").is_file()) \
        or (path / "dataset_dict.json").is_file()


def _folder(path: Path, fmt: str) -> list[tuple[str, str]]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{path}: a folder without data files ({', '.join(DATA_SUFFIXES)}) and not a "
                                "save_to_disk folder (no state.json/dataset_info.json)")
    suffixes = {p.suffix for p in files}
    if len(suffixes) > 1:
        raise ValueError(f"{path}: a folder of mixed data files ({', '.join(sorted(suffixes))}): list the files "
                         "to use in data.train_files")
    return [("jsonl" if fmt == "auto" and p.suffix == ".jsonl" else "files", str(p)) for p in files]


def resolve(entry: str, fmt: str) -> list[tuple[str, str]]:
    """The (kind, location) pairs one ``data.train_files`` entry reads, in order."""
    if fmt not in FORMATS:
        raise ValueError(f"data.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(entry)
    if fmt == "jsonl":
        return [("jsonl", entry)]  # our reader reports a missing file or a folder itself
    if path.is_dir():
        return [("disk", entry)] if is_saved_dataset(path) else _folder(path, fmt)
    if path.is_file():
        if fmt == "auto" and path.suffix == ".jsonl":
            return [("jsonl", entry)]
        if fmt == "auto" and path.suffix not in DATA_SUFFIXES:
            raise ValueError(f"{path}: unknown data file type {path.suffix or '(no suffix)'!r}: expected "
                             f"{', '.join(DATA_SUFFIXES)}, a save_to_disk folder or a Hub id")
        return [("files", entry)]
    if path.suffix in DATA_SUFFIXES or entry.startswith((".", "/", "~")) or not HUB_ID.match(entry):
        raise FileNotFoundError(f"{path}: training file not found")
    return [("hub", entry)]


def read_source(entry: str, options: SourceOptions, report: LoadReport) -> Iterator[Example]:
    """Every validated row of one ``data.train_files`` entry."""
    for kind, location in resolve(entry, options.fmt):
        yield from READERS[kind](location, options, report)
