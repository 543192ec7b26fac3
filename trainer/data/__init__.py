"""Training data: schema validation, deterministic sampling, duplicate-free batching."""
from trainer.data.dataset import Collator, ContrastiveDataset, UniqueBatchSampler, load_examples
from trainer.data.schema import DataError, Example

__all__ = ["Collator", "ContrastiveDataset", "DataError", "Example", "UniqueBatchSampler", "load_examples"]
