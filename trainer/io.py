"""Reading JSON lines so that every error names ``path:line`` (standard library only).

    python -c "from trainer.io import read_jsonl; print(next(read_jsonl('data/build/news/train.jsonl')))"

Used by the mining corpus, the evaluation task files and BEIR folders. Bytes are read and decoded line by line,
so a line that is not UTF-8 is reported with its file and line instead of a bare ``UnicodeDecodeError``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def read_lines(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without the line break) for each non-blank line of ``path``, decoded one line at
    a time; raises ``error`` with ``path:line: row: not valid UTF-8 (...)``."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield line_no, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise error(f"{path}:{line_no}: row: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1})") from None


def read_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded value) for each non-blank line of ``path``.

    Raises ``error`` with ``path:line: row: not valid UTF-8 (...)`` or ``path:line: row: invalid JSON: ...``.
    """
    for line_no, text in read_lines(path, error):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{line_no}: row: invalid JSON: {err.msg} at column {err.colno}") from None
        yield line_no, value
