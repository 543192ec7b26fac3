"""What every source reader shares: the load's options and the registry of readers by kind."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from trainer.data.schema import Example, LoadReport


@dataclass(frozen=True)
class SourceOptions:
    """How every source of one load is read (the ``data.*`` fields that are not per source)."""

    fmt: str = "auto"
    on_error: str = "raise"
    streaming: bool = False  # files/hub: iterate without loading everything
    columns: dict[str, str] = field(default_factory=dict)  # raw column -> schema field (data.columns)
    hf_config: Optional[str] = None
    hf_split: str = "train"
    hf_revision: Optional[str] = None


Reader = Callable[[str, SourceOptions, LoadReport], Iterator[Example]]
READERS: dict[str, Reader] = {}


def register(kind: str) -> Callable[[Reader], Reader]:
    """Add a reader for ``kind`` (a module per kind registers itself on import)."""
    def wrap(reader: Reader) -> Reader:
        READERS[kind] = reader
        return reader
    return wrap
