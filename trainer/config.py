"""Structured configs: the typed schema behind every YAML file in ``conf/``.

    python -m trainer.train --cfg job          # print the composed, validated config

Registered in Hydra's ConfigStore as ``train_schema`` (used by ``conf/train.yaml``); with struct mode on,
a misspelled key fails at compose time with the key's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16  # higher = more capacity, more memory
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Optional[List[str]] = None  # None = per-architecture default
    merge_on_export: bool = True


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub name or local folder
    pooling: str = "mean"  # mean | cls | last (last token: decoder LLMs, EOS appended, left padding)
    normalize: bool = True  # L2-normalise embeddings (cosine similarity)
    max_length_query: int = 64
    max_length_passage: int = 256
    dtype: str = "float32"  # weights dtype: float32 | bfloat16 | float16 (mixed precision is train.mixed_precision)
    query_prefix: str = ""  # e.g. "query: " (E5)
    passage_prefix: str = ""  # e.g. "passage: "
    instruction_template: Optional[str] = None  # e.g. "Instruct: {instruction}\nQuery: {text}" (queries only)
    instructions: Dict[str, str] = field(default_factory=dict)  # task -> instruction
    exclude_prompt_from_pooling: bool = False  # mean pooling skips prefix/instruction tokens
    append_eos: Optional[bool] = None  # None = True for last-token pooling
    padding_side: Optional[str] = None  # None = left for last-token pooling, else the tokenizer's
    attn_implementation: Optional[str] = None  # e.g. sdpa | eager | flash_attention_2
    bidirectional: bool = False  # decoder models: drop the causal mask where the architecture allows
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    init_from_teacher_layers: Optional[List[int]] = None  # build the student from these teacher layers
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    train_files: List[str] = MISSING  # JSONL files (or parquet/json via format=hf)
    format: str = "jsonl"  # jsonl | hf (local Hugging Face datasets json/parquet)
    streaming: bool = False  # hf only: iterate without loading everything
    num_negatives: int = 0  # hard negatives per query (0 = in-batch negatives only)
    on_error: str = "raise"  # raise | skip (bad rows are counted and reported)
    task_homogeneous: bool = False  # every batch from one task (E5/BGE style)
    max_rows: Optional[int] = None
    num_workers: int = 0


@dataclass
class LossConfig:
    _target_: str = "trainer.losses.infonce.InfoNCE"
    temperature: float = 0.05  # scores are cos/temperature; one convention everywhere
    learnable_temperature: bool = False
    symmetric: bool = False  # add the passage -> query term
    mask_duplicate_positives: bool = True  # in-batch copies of a query's positive text are not negatives
    weight: float = 1.0


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    warmup_steps: Optional[int] = None  # overrides warmup_ratio
    scheduler: str = "linear"  # linear | cosine | constant
    max_grad_norm: Optional[float] = 1.0
    temperature_lr: Optional[float] = None  # learnable temperature's own lr


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | wandb
    project: str = "embedstill"
    mode: str = "offline"  # wandb mode: offline | online | disabled
    every_n_steps: int = 10
    tags: List[str] = field(default_factory=list)


@dataclass
class EvalTaskConfig:
    name: str = MISSING
    kind: str = "retrieval"  # retrieval | sts | classification | clustering | pair_classification | reranking
    path: str = MISSING  # BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or task file
    split: str = "test"
    task: Optional[str] = None  # training task name whose instruction the queries get
    main_score: str = "ndcg_at_10"
    max_queries: Optional[int] = None


@dataclass
class EvalConfig:
    tasks: List[EvalTaskConfig] = field(default_factory=list)
    every_n_steps: Optional[int] = None  # None = only before and after training
    before_training: bool = True
    batch_size: int = 64
    on_save: bool = False
    metric: Optional[str] = None  # "<task>/<score>" returned to sweeps; None = first task's main score


@dataclass
class TrainLoopConfig:
    batch_size: int = 32  # per device
    epochs: int = 1
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs
    stop_after_steps: Optional[int] = None  # stop early (the schedule still plans for max_steps)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    save_every_n_steps: Optional[int] = None
    keep_last: int = 2
    seed: int = 42
    num_threads: Optional[int] = None  # torch intra-op threads (CPU)
    progress_bar: bool = True
    remine_every: Optional[int] = None


@dataclass
class TrainConfig:
    name: str = MISSING  # run name; the run dir is ${paths.runs}/${name}
    run_dir: str = MISSING
    resume: Optional[str] = None  # None | auto | path to a state folder
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    paths: Dict[str, str] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)  # free-form: notes, tags for the run dir


def register_configs() -> None:
    """Register the schema and the ``${asset:NAME}`` resolver (idempotent)."""
    from trainer.assets import asset

    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="eval/task", name="task_schema", node=EvalTaskConfig)


def _conf_dir() -> Path:
    """``conf/`` beside the package in a checkout; ``trainer/conf`` inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "train.yaml").exists():
            return candidate
    raise FileNotFoundError(f"no Hydra config folder found beside {here}")


CONF_DIR = _conf_dir()
