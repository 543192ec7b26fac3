"""Our JSONL files: read line by line, so a bad row is named ``path:line: field:`` (see ``trainer.data.schema``)."""
from __future__ import annotations

from typing import Iterator

from trainer.data.schema import Example, LoadReport, iter_jsonl
from trainer.data.sources.base import SourceOptions, register


@register("jsonl")
def read_jsonl(path: str, options: SourceOptions, report: LoadReport) -> Iterator[Example]:
    """Rows of one JSONL file in any row format (our schema, FlagEmbedding, sentence-transformers, data.columns)."""
    return iter_jsonl(path, options.on_error, report, options.columns)
