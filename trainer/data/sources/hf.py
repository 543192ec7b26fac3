"""Sources read through Hugging Face ``datasets``: data files, ``save_to_disk`` folders and Hub ids.

``datasets`` is imported only when one of these is read (it is slow to import). Rows are numbered from 1 in
messages, ``path:row N`` (a table's row, header not counted); JSON files keep ``path:N`` as before (the line of
a JSON-lines file, the element of a JSON array).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from trainer.data.schema import Example, LoadReport, iter_records
from trainer.data.sources.base import SourceOptions, register

BUILDERS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".arrow": "arrow"}  # any other suffix: json


@register("files")
def read_file(path: str, options: SourceOptions, report: LoadReport) -> Iterator[Example]:
    """One json/jsonl/csv/tsv/parquet/arrow file through ``load_dataset(builder, data_files=path)``."""
    import datasets

    suffix = Path(path).suffix
    builder = BUILDERS.get(suffix, "json")
    extra: dict[str, Any] = {"delimiter": "\t"} if suffix == ".tsv" else {}
    ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=options.streaming, **extra)
    return iter_records(ds, path, options.on_error, report, options.columns,
                        row_label="" if builder == "json" else "row ")


@register("disk")
def read_saved(path: str, options: SourceOptions, report: LoadReport) -> Iterator[Example]:
    """A ``save_to_disk`` folder; of a DatasetDict, the split ``data.hf_split``."""
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if options.hf_split not in ds:
            raise ValueError(f"{path}: no split {options.hf_split!r} (it has {', '.join(ds)}): set data.hf_split")
        ds = ds[options.hf_split]
    return iter_records(ds, path, options.on_error, report, options.columns, row_label="row ")


def load_hub(name: str, options: SourceOptions) -> Any:
    """``load_dataset(name, config, split, revision)``: a Hub id, or a local folder of data files (same call)."""
    import datasets

    try:
        return datasets.load_dataset(name, options.hf_config, split=options.hf_split, revision=options.hf_revision,
                                     streaming=options.streaming)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:
        raise FileNotFoundError(f"{name}: not a local file or folder, and loading it as a Hugging Face Hub dataset "
                                f"(config {options.hf_config}, split {options.hf_split}, revision "
                                f"{options.hf_revision}) failed: {type(err).__name__}: {err}") from err


@register("hub")
def read_hub(name: str, options: SourceOptions, report: LoadReport) -> Iterator[Example]:
    """A Hugging Face Hub dataset (``data.hf_config``, ``data.hf_split``, ``data.hf_revision``)."""
    split = f"{name}[{options.hf_split}]"
    return iter_records(load_hub(name, options), split, options.on_error, report, options.columns,
                        row_label="row ")
