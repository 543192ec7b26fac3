"""Encoders: prompts, tokenisation, pooling, checkpoints."""
from trainer.models.encoder import Encoder, EncoderSpec
from trainer.models.prompts import PromptSpec

__all__ = ["Encoder", "EncoderSpec", "PromptSpec"]
