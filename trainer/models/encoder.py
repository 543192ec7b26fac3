"""The bi-encoder: any transformers ``AutoModel`` plus prompts, tokenisation, pooling and normalisation.

    python -c "from trainer.models import Encoder; from trainer.assets import minilm; \
               print(Encoder.from_pretrained(str(minilm())).encode(['hello'], side='query').shape)"

``EncoderSpec`` is everything needed to encode a text the way the model was trained; it is saved with every
checkpoint (``embedstill.json``) so evaluation and export use exactly the training prompts and pooling.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from trainer.models.pooling import POOLINGS, pool
from trainer.models.prompts import PromptSpec

METADATA_FILE = "embedstill.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EncoderSpec:
    pooling: str = "mean"
    normalize: bool = True
    max_length_query: int = 64
    max_length_passage: int = 256
    prompts: PromptSpec = field(default_factory=PromptSpec)
    exclude_prompt_from_pooling: bool = False
    append_eos: bool = False
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {self.padding_side!r}")

    def max_length(self, side: str) -> int:
        return self.max_length_query if side == "query" else self.max_length_passage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], tokenizer: Optional[PreTrainedTokenizerBase] = None) -> "EncoderSpec":
        """Build from a model config (``conf/model/*.yaml``) or from saved metadata."""
        pooling = cfg.get("pooling", "mean")
        append_eos = cfg.get("append_eos")
        padding_side = cfg.get("padding_side")
        prompts = cfg.get("prompts")
        return cls(
            pooling=pooling,
            normalize=bool(cfg.get("normalize", True)),
            max_length_query=int(cfg.get("max_length_query", 64)),
            max_length_passage=int(cfg.get("max_length_passage", 256)),
            prompts=PromptSpec.from_mapping(prompts if prompts is not None else cfg),
            exclude_prompt_from_pooling=bool(cfg.get("exclude_prompt_from_pooling", False)),
            append_eos=(pooling == "last") if append_eos is None else bool(append_eos),
            padding_side=padding_side or ("left" if pooling == "last" else "right"),
        )


def load_metadata(folder: str | Path) -> Optional[dict[str, Any]]:
    """``<folder>/embedstill.json`` as a dict, None when the folder has none; a damaged file names itself."""
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return None
    damaged = "the checkpoint's metadata is damaged: restore the file, or save the checkpoint again"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}); {damaged}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON: {err.msg} at column {err.colno}; {damaged}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}; {damaged}")
    return meta


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """``load_metadata``, raising ``FileNotFoundError`` when the folder is no embedstill checkpoint."""
    meta = load_metadata(folder)
    if meta is None:
        raise FileNotFoundError(f"{folder}: no {METADATA_FILE}: not an embedstill checkpoint "
                                "(it lacks the pooling, normalisation, max lengths and prompts it was trained with)")
    return meta


def _spec_from_metadata(path: Path) -> Optional[EncoderSpec]:
    meta = load_metadata(path)
    if meta is None:
        return None
    if not isinstance(meta.get("encoder"), dict):
        raise ValueError(f"{path / METADATA_FILE}: encoder: missing (the pooling, normalisation, max lengths and "
                         "prompts the model was trained with)")
    return EncoderSpec.from_mapping(meta["encoder"])


DENSE_DIR = "2_Dense"  # sentence-transformers module folder: config.json + model.safetensors (linear.weight)


def load_dense(folder: Path) -> Optional[nn.Linear]:
    """The Dense module of a saved checkpoint (None when it has none); only identity activations are ours."""
    config_file = folder / DENSE_DIR / "config.json"
    if not config_file.exists():
        return None
    from safetensors.torch import load_file

    config = json.loads(config_file.read_text(encoding="utf-8"))
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation != "torch.nn.modules.linear.Identity" or config.get("bias", True):
        raise ValueError(f"{config_file}: only a bias-free Dense module with an Identity activation is supported "
                         f"(got bias={config.get('bias', True)}, activation_function={activation!r})")
    dense = nn.Linear(int(config["in_features"]), int(config["out_features"]), bias=False)
    state = load_file(str(folder / DENSE_DIR / "model.safetensors"))
    dense.weight.data.copy_(state["linear.weight"])
    return dense


def _corrupt_weights_message(path: Path, err: Exception) -> str:
    """Which ``*.safetensors`` file of ``path`` cannot be read (its header checked alone), and what to do."""
    for file in sorted(path.glob("*.safetensors")) if path.is_dir() else []:
        try:
            with safe_open(str(file), "pt"):
                pass
        except SafetensorError as file_err:
            return (f"{file}: corrupt safetensors file ({file_err}): the weights cannot be read; restore the file "
                    "or save the checkpoint again")
    return f"{path}: corrupt safetensors weights ({err})"


class Encoder(nn.Module):
    """Text -> embedding. ``forward`` takes token features; ``tokenize`` and ``encode`` take raw text."""

    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase, spec: EncoderSpec,
                 source: str = "", dense: Optional[nn.Linear] = None) -> None:
        super().__init__()
        self.backbone = backbone
        # Optional linear map after pooling (hidden -> D_out, no activation), e.g. into a teacher's space; saved
        # as a sentence-transformers Dense module between Pooling and Normalize.
        self.dense = dense
        self.tokenizer = tokenizer
        self.spec = spec
        self.source = source  # where the weights came from (base model name/path) for metadata
        if tokenizer.pad_token_id is None:
            # Decoder tokenizers often lack a pad token; EOS is the usual stand-in.
            tokenizer.pad_token = tokenizer.eos_token
        if spec.append_eos and tokenizer.eos_token_id is None:
            raise ValueError(f"append_eos needs a tokenizer with an EOS token ({source})")

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, spec: Optional[EncoderSpec] = None, *, dtype: str = "float32",
                        trust_remote_code: bool = False, attn_implementation: Optional[str] = None,
                        ) -> "Encoder":
        """Load a hub name or local folder. ``spec=None`` reads our metadata, else the defaults."""
        path = Path(name_or_path)
        if spec is None:
            spec = (_spec_from_metadata(path) if path.is_dir() else None) or EncoderSpec()
        kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code,
                                  "use_safetensors": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            backbone = AutoModel.from_pretrained(name_or_path, **kwargs)
        except SafetensorError as err:
            raise ValueError(_corrupt_weights_message(path, err)) from err
        if getattr(backbone.config, "is_causal", True) is False:  # saved after model.bidirectional=true
            from trainer.models.decoder import make_bidirectional

            make_bidirectional(backbone)  # also clears the attention modules' own causal flags
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        dense = load_dense(path) if path.is_dir() else None
        return cls(backbone, tokenizer, spec, source=str(name_or_path), dense=dense)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Encoder":
        """Build from a ``ModelConfig`` (``conf/model/*.yaml``)."""
        tokenizer_spec = EncoderSpec.from_mapping(cfg)
        return cls.from_pretrained(cfg["name_or_path"], tokenizer_spec, dtype=cfg.get("dtype", "float32"),
                                   trust_remote_code=bool(cfg.get("trust_remote_code", False)),
                                   attn_implementation=cfg.get("attn_implementation"))

    @property
    def hidden_dim(self) -> int:
        """The backbone's width: what pooling returns."""
        return int(self.backbone.config.hidden_size)

    @property
    def dim(self) -> int:
        """The embedding's width: the Dense module's output when there is one."""
        return int(self.dense.out_features) if self.dense is not None else self.hidden_dim

    def add_dense(self, out_features: int, weight: Optional[torch.Tensor] = None) -> nn.Linear:
        """Attach a (hidden -> out_features) Dense module, initialised with ``weight`` (out, hidden) if given."""
        self.dense = nn.Linear(self.hidden_dim, out_features, bias=False).to(self.device)
        if weight is not None:
            with torch.no_grad():
                self.dense.weight.copy_(weight)
        return self.dense

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # ---- tokenisation --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], side: str, instructions: Optional[Sequence[Optional[str]]] = None,
                 tasks: Optional[Sequence[Optional[str]]] = None) -> dict[str, torch.Tensor]:
        """Prompt, tokenize, truncate, append EOS if asked, pad. Returns input_ids, attention_mask, pool_mask (B, T).

        A query's instruction is its own (``instructions``) or else its task's entry in the prompt spec.
        """
        return self._pad(*self._token_rows(texts, side, instructions, tasks))

    def _token_rows(self, texts: Sequence[str], side: str, instructions: Optional[Sequence[Optional[str]]] = None,
                    tasks: Optional[Sequence[Optional[str]]] = None) -> tuple[list[list[int]], list[list[int]]]:
        """Unpadded token ids per text and the matching pooling masks (1 = pooled)."""
        spec = self.spec
        instructions = instructions if instructions is not None else [None] * len(texts)
        tasks = tasks if tasks is not None else [None] * len(texts)
        formatted = [spec.prompts.format(t, side, spec.prompts.instruction_for(task, i))
                     for t, i, task in zip(texts, instructions, tasks)]
        max_length = spec.max_length(side) - int(spec.append_eos)
        need_offsets = spec.exclude_prompt_from_pooling and any(n for _, n in formatted)
        enc = self.tokenizer([f for f, _ in formatted], truncation=True, max_length=max_length,
                             add_special_tokens=True, return_offsets_mapping=need_offsets)
        rows: list[list[int]] = enc["input_ids"]
        eos = self.tokenizer.eos_token_id
        pool_rows: list[list[int]] = []
        for r, ids in enumerate(rows):
            if spec.append_eos and (not ids or ids[-1] != eos):
                ids.append(eos)
            keep = [1] * len(ids)
            if need_offsets and formatted[r][1]:
                prompt_chars = formatted[r][1]
                offsets = enc["offset_mapping"][r]
                # Leading tokens that end inside the prompt (special tokens at the start included, as
                # sentence-transformers does with include_prompt=False); keep at least one token.
                n = 0
                while n < len(offsets) - 1 and offsets[n][1] <= prompt_chars:
                    n += 1
                keep[:n] = [0] * n
            pool_rows.append(keep)
        return rows, pool_rows

    def _pad(self, rows: list[list[int]], pool_rows: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(1, max(len(r) for r in rows))
        pad_id = self.tokenizer.pad_token_id
        left = self.spec.padding_side == "left"
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pool_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (row, keep) in enumerate(zip(rows, pool_rows)):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[r, span] = torch.tensor(row, dtype=torch.long)
            attention[r, span] = 1
            pool_mask[r, span] = torch.tensor(keep, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": attention, "pool_mask": pool_mask}

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T) token features -> (B, D) embeddings (float32, L2-normalised if the spec says so)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        pooled = pool(hidden, attention_mask, attention_mask if pool_mask is None else pool_mask, self.spec.pooling)
        pooled = pooled.float()  # losses and similarity in float32 even under bf16 autocast
        if self.dense is not None:
            pooled = self.dense(pooled).float()  # (B, D_out)
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    @torch.no_grad()
    def encode(self, texts: Sequence[str], side: str = "passage",
               instructions: Optional[Sequence[Optional[str]]] = None, batch_size: int = 64, task: Optional[str] = None,
               autocast_dtype: Optional[torch.dtype] = None,
               progress: Optional[Callable[[int], Any]] = None) -> np.ndarray:
        """Encode raw texts; returns (N, D) float32 in input order. ``progress(n)`` is called after each batch.

        All texts are tokenized once, then batched by token count (longest first): sorting by characters, as
        sentence-transformers does, leaves more padding on mixed short/long text, and a CPU pays for every
        padded token.
        """
        was_training = self.training
        self.eval()
        rows, pool_rows = self._token_rows(texts, side, instructions, [task] * len(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(rows[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        device = self.device
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feats = self._pad([rows[i] for i in idx], [pool_rows[i] for i in idx])
            feats = {k: v.to(device) for k, v in feats.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out[idx] = self(**feats).cpu().numpy()
            if progress is not None:
                progress(len(idx))
        self.train(was_training)
        return out

    def metadata(self) -> dict[str, Any]:
        return {"encoder": self.spec.to_dict(), "base_model": self.source, "dim": self.dim,
                **({"dense": {"in_features": self.hidden_dim, "out_features": self.dim}} if self.dense else {}),
                "architecture": type(self.backbone).__name__}
