"""The training schema's field names and its error type (shared by the validator and the row formats)."""
from __future__ import annotations

KNOWN_FIELDS = {"query", "pos", "neg", "task", "instruction", "label", "pos_scores", "neg_scores"}


class DataError(ValueError):
    """A malformed row: the message starts with ``path:line: field:``."""
