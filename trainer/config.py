"""Structured configs: the typed schema behind every YAML file in ``conf/``.

    python -m trainer.train --cfg job          # print the composed, validated config

Registered in Hydra's ConfigStore as ``train_schema`` (used by ``conf/train.yaml``); with struct mode on,
a misspelled key fails at compose time with the key's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
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
    # task -> instruction, or a list of paraphrases: training draws one per row and epoch, evaluation uses the first
    instructions: Dict[str, Any] = field(default_factory=dict)
    symmetric_tasks: List[str] = field(default_factory=list)  # passages encoded as queries, with the instruction
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
    # Sources (trainer/data/sources): JSONL/json/csv/tsv/parquet files, folders of them, save_to_disk folders, Hub ids
    train_files: List[str] = MISSING
    format: str = "auto"  # auto (by suffix / folder content) | jsonl (our reader for all) | hf (datasets for all)
    columns: Any = None  # raw column -> schema field, e.g. {question: query, answer: pos}
    hf_config: Optional[str] = None  # Hub ids: the dataset's config (subset) name
    hf_split: str = "train"  # Hub ids and save_to_disk DatasetDict folders
    hf_revision: Optional[str] = None  # Hub ids: a branch, tag or commit
    source_rows: Optional[List[Optional[int]]] = None  # per train_files entry: its first N rows (null = all)
    # per train_files entry: its share of every epoch's rows, drawn per epoch (up/down-sampled; trainer/data/mixture.py)
    source_weights: Optional[List[float]] = None
    streaming: bool = False  # read rows lazily through a shuffle buffer (trainer/data/stream.py): memory stays bounded
    shuffle_buffer: int = 10_000  # streaming: rows held for the seeded buffer shuffle
    num_negatives: int = 0  # hard negatives per query (0 = in-batch negatives only)
    on_error: str = "raise"  # raise | skip (bad rows are counted and reported)
    task_homogeneous: bool = False  # every batch from one task (E5/BGE style)
    max_rows: Optional[int] = None
    max_rows_per_file: Optional[int] = None  # the first N rows of each source (sizes a multi-task mix)
    num_workers: int = 0


@dataclass
class LossConfig:
    _target_: str = "trainer.losses.infonce.InfoNCE"
    temperature: float = 0.05  # scores are cos/temperature; one convention everywhere
    learnable_temperature: bool = False
    symmetric: bool = False  # add the passage -> query term
    mask_duplicate_positives: bool = True  # in-batch copies of a query's positive text are not negatives
    weight: float = 1.0
    matryoshka_dims: Optional[List[int]] = None  # e.g. [64, 128, 256]: also train these prefixes (+ full)


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
    main_score: str = "ndcg_at_10"  # for other kinds, this default means the kind's own main score
    max_queries: Optional[int] = None  # also caps the rows of non-retrieval task files
    train_split: str = "train"  # classification: the rows the logistic regression is fitted on
    side: str = "query"  # sts/classification/clustering/pair_classification texts use this side's prompt
    ignore_identical_ids: bool = False  # retrieval: never retrieve a document with the query's id (BEIR, MTEB)
    # Prompts come from the checkpoint's embedstill.json. Setting one of these to a different value is refused
    # unless allow_prompt_override=true (then it replaces the checkpoint's for this task).
    query_prefix: Optional[str] = None
    passage_prefix: Optional[str] = None
    instruction: Optional[str] = None
    allow_prompt_override: bool = False


@dataclass
class EvalConfig:
    tasks: List[EvalTaskConfig] = field(default_factory=list)
    every_n_steps: Optional[int] = None  # None = only before and after training
    before_training: bool = True
    batch_size: int = 64
    on_save: bool = False
    metric: Optional[str] = None  # "<task>/<score>" returned to sweeps; None = first task's main score
    # Retrieval tasks also scored on truncated, renormalised embeddings (keys <task>/dim64/...); follows the loss.
    matryoshka_dims: Optional[List[int]] = "${oc.select:loss.matryoshka_dims,null}"  # type: ignore[assignment]
    # One precision rule for every evaluation path (in the loop, on save, the watcher, the CLI):
    # trainer/runtime.autocast_dtype; auto = bf16 on CUDA, float32 on CPU (exact, comparable across machines).
    precision: str = "auto"


@dataclass
class TrainLoopConfig:
    """Step counts are >= 1 or null (``check_train_config``); where 0 is allowed, the comment says what it means."""
    batch_size: int = 32  # per device
    epochs: int = 1  # >= 1; used when max_steps is null
    max_steps: Optional[int] = None  # optimizer steps (>= 1); overrides epochs; null = train.epochs epochs
    stop_after_steps: Optional[int] = None  # stop early (the schedule still plans for max_steps); null = at the end
    gradient_accumulation_steps: int = 1
    # auto = bf16 autocast where the hardware computes it natively (CUDA; CPUs with AMX/AVX512-BF16), else no |
    # no | bf16 | fp16 (trainer/runtime.training_mixed_precision); weights and optimizer state stay float32
    mixed_precision: str = "auto"
    save_every_n_steps: Optional[int] = None  # null or 0 = save only when training stops
    keep_last: int = 2  # states and checkpoints kept; 0 = keep every one
    keep_best: Optional[str] = None  # "<task>/<score>": also keep the checkpoint that scored best (checkpoints/best)
    early_stopping_patience: Optional[int] = None  # stop after N evaluations without a better keep_best score
    seed: int = 42
    num_threads: Optional[int] = None  # torch intra-op threads (CPU)
    progress_bar: bool = True
    remine_every: Optional[int] = None
    mini_batch_size: Optional[int] = None  # GradCache: forward/backward in chunks of m texts (None = off)


@dataclass
class DistillSettings:
    """Distillation beside the contrastive loss (conf/distill/*.yaml): besides these settings, one field per loss
    registered in ``trainer.losses.registry`` (``distill_schema``); each part is logged on its own."""
    # Training tasks whose batches the teacher scores (null = every batch). A teacher without instructions teaches
    # one similarity for every task; on label tasks that pulls against the instruction-conditioned structure.
    tasks: Optional[List[str]] = None
    # true: the student gets a Dense head into the teacher's space, ridge-fitted before training and exported as a
    # sentence-transformers Dense module; embedding distillation then compares through a fixed identity.
    align: bool = False


def distill_schema() -> type:
    """``DistillSettings`` plus ``<name>: <its config>`` for every registered distillation loss (off by default)."""
    from trainer.losses.registry import discover

    fields = [(name, entry.config, field(default_factory=entry.config)) for name, entry in discover().items()]
    return make_dataclass("DistillConfig", fields, bases=(DistillSettings,))


@dataclass
class DomainMergeConfig:
    enabled: bool = True  # interpolate base and adapted weights (LM-Cocktail style), ratio chosen on dev
    ratios: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # weight of the adapted model
    general_dev: Optional[str] = None  # BEIR folder of a general task's dev split (forgetting); None = in-domain only
    general_dev_split: str = "test"
    general_dev_max_queries: Optional[int] = 200


@dataclass
class DomainConfig:
    """``python -m trainer.domain experiment=domain_adapt domain.text_dir=...`` (trainer/domain/)."""
    text_dir: str = MISSING  # a folder of unlabeled UTF-8 text files from the new domain
    unit: str = "line"  # one document per line | paragraph | file
    min_words: int = 5  # shorter documents are dropped
    strip_urls: bool = True  # a shared URL would make a pseudo-query trivially easy
    max_docs: Optional[int] = None
    query_mode: str = "crop"  # crop (independent cropping) | ict (inverse cloze)
    query_generator: Optional[str] = None  # dotted path to fn(docs, seed) -> queries; overrides query_mode
    query_ratio: List[float] = field(default_factory=lambda: [0.1, 0.5])  # crop: query span, share of the words
    pos_ratio: List[float] = field(default_factory=lambda: [0.5, 1.0])  # crop: positive span
    ict_keep: float = 0.1  # ict: probability the query sentence stays in its positive
    dev_docs: int = 200  # held-out documents for choosing the merge ratio
    test_docs: int = 500  # held-out documents for the in-domain eval (never trained on)
    num_negatives: int = 3  # mined with the teacher per pseudo-query
    mine_max_rank: int = 30  # negatives come from the teacher's top 30 (minus the positive)
    mine_relative: Optional[float] = 0.95  # keep a negative only if teacher score < 0.95 x positive's
    mine_batch_size: int = 64
    seed: int = 0
    merge: DomainMergeConfig = field(default_factory=DomainMergeConfig)


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
    # conf/teacher: null = no teacher; each YAML is typed by its kind's schema (trainer/teachers/kinds.py)
    teacher: Optional[Any] = None
    distill: DistillSettings = field(default_factory=DistillSettings)  # conf/distill (``train_schema``: every loss)
    domain: Optional[DomainConfig] = None  # domain adaptation job only (conf/experiment/domain_adapt.yaml)


@dataclass
class ExportVerifyConfig:
    batch_sizes: List[int] = field(default_factory=lambda: [1, 2, 5, 16])  # each checked at several lengths
    tolerance: float = 1e-4  # max abs diff ONNX Runtime fp32 vs PyTorch; export fails above it
    seed: int = 0


@dataclass
class ExportInt8Config:
    per_channel: bool = True  # one weight scale per output column instead of per matrix (closer to fp32)
    reduce_range: bool = False  # 7-bit weights: only for x86 CPUs without VNNI (u8 x s8 saturation)


@dataclass
class ExportSessionConfig:
    threads: int = 0  # ONNX Runtime intra-op threads for the checks and benchmarks; 0 = physical cores
    spinning: bool = True  # threads busy-wait between ops: faster on an idle machine, wasteful on a shared one


@dataclass
class ExportConfig:
    """``python -m trainer.export checkpoint=...`` (conf/export.yaml)."""
    checkpoint: str = MISSING  # an exported checkpoint folder (with embedstill.json)
    out: str = MISSING  # the ONNX folder written (atomically)
    overwrite: bool = False  # replace an existing out folder that is not an earlier export (never the checkpoint's)
    opset: int = 18
    quantize: bool = True  # also write model_int8.onnx (onnxruntime dynamic int8) and measure its quality
    optimize: bool = True  # fuse attention / layer norm / GELU into ONNX Runtime ops (false: plain ONNX graph)
    sentence_transformers: bool = True  # also out/sentence-transformers/ for SentenceTransformer(.., backend="onnx")
    int8: ExportInt8Config = field(default_factory=ExportInt8Config)
    session: ExportSessionConfig = field(default_factory=ExportSessionConfig)
    verify: ExportVerifyConfig = field(default_factory=ExportVerifyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # held-out tasks for the int8 quality check
    paths: Dict[str, str] = field(default_factory=dict)


@dataclass
class MergeConfig:
    """``python -m trainer.merge checkpoints=[A,B] weights=[0.7,0.3] out=DIR`` (conf/merge.yaml)."""
    checkpoints: List[str] = MISSING  # exported checkpoints fine-tuned from one base model (same architecture)
    weights: Optional[List[float]] = None  # one per checkpoint, summing to 1; None = equal weights
    out: str = MISSING  # the merged checkpoint (written atomically); an earlier merge there is replaced
    overwrite: bool = False  # replace an out folder that is not an earlier merge (never a source checkpoint)
    paths: Dict[str, str] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    """``python -m trainer.evaluate`` (conf/evaluate.yaml): one checkpoint, a run, a watched run, or a leaderboard."""
    checkpoint: Optional[str] = None  # one exported checkpoint folder
    corpus_checkpoint: Optional[str] = None  # asymmetric: documents by this model, queries by ``checkpoint``
    run_dir: Optional[str] = None  # every complete checkpoint of a run (results in <run_dir>/eval/)
    runs: List[str] = field(default_factory=list)  # leaderboard across these runs' results (no encoding)
    out_dir: Optional[str] = None  # checkpoint=: where results go (default <run>/eval/<name> or <ckpt>-eval)
    watch: bool = False  # with run_dir: follow the run until DONE.json or the idle timeout
    poll_seconds: float = 10.0
    idle_timeout_seconds: float = 3600.0  # stop watching after this long without a new checkpoint
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    allow_no_metadata: bool = False  # evaluate a folder without embedstill.json with the default spec
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: Dict[str, str] = field(default_factory=dict)


# key -> (lowest value allowed, whether null is allowed, what the key counts)
@dataclass
class PushConfig:
    """``python -m trainer.push checkpoint=... repo_id=...`` (conf/push.yaml): publish to the Hugging Face Hub."""
    checkpoint: str = MISSING  # an exported checkpoint folder
    repo_id: str = MISSING  # ORG/NAME on the Hub
    private: Optional[bool] = True  # visibility of a new repository (an existing one keeps its own)
    revision: str = "main"  # branch committed to; created from main when missing
    commit_message: Optional[str] = None
    refresh_card: bool = True  # rewrite README.md (latest scores, usage code naming repo_id) before uploading
    dry_run: bool = False  # card and checks only: nothing is sent


def in_multirun() -> bool:
    return HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN"


def job_dir(default: str) -> str:
    """Resolver ``${job_dir:...}``: Hydra's job output dir in multirun, else ``default``."""
    return HydraConfig.get().runtime.output_dir if in_multirun() else default


def train_schema() -> type:
    """``TrainConfig`` whose ``distill`` group knows every registered distillation loss (built when configs are
    registered, so a loss file added to ``trainer/losses/`` needs no edit here)."""
    distill = distill_schema()
    return make_dataclass("TrainConfig", [("distill", distill, field(default_factory=distill))], bases=(TrainConfig,))


def register_configs() -> None:
    """Register the schema and the ``${asset:NAME}`` resolver (idempotent)."""
    from trainer.assets import asset

    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset)
    if not OmegaConf.has_resolver("job_dir"):
        OmegaConf.register_new_resolver("job_dir", job_dir)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=train_schema())
    from trainer.teachers.kinds import store_schemas

    store_schemas(cs)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(group="eval/task", name="task_schema", node=EvalTaskConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="push_schema", node=PushConfig)
    cs.store(name="merge_schema", node=MergeConfig)


def _conf_dir() -> Path:
    """``conf/`` beside the package in a checkout; ``trainer/conf`` inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "train.yaml").exists():
            return candidate
    raise FileNotFoundError(f"no Hydra config folder found beside {here}")


CONF_DIR = _conf_dir()
