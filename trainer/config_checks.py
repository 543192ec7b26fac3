"""Checks of a composed training config that its types cannot express: ranges, combinations, formats.

    pytest tests/test_config.py

``check_train_config`` runs before anything loads (no model, no data), so a bad value fails in a second with the
key, the value and what is allowed.
"""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import OmegaConf

_BOUNDS = {
    "train.batch_size": (1, False, "queries per device per step"),
    "train.epochs": (1, False, "passes over the data; train.max_steps=N trains N steps instead"),
    "train.max_steps": (1, True, "optimizer steps; null trains train.epochs epochs"),
    "train.stop_after_steps": (1, True, "the step to stop at; null stops at the end"),
    "train.gradient_accumulation_steps": (1, False, "micro-batches per optimizer step"),
    "train.save_every_n_steps": (0, True, "null or 0 saves only when training stops"),
    "train.keep_last": (0, False, "states and checkpoints kept; 0 keeps every one"),
    "train.early_stopping_patience": (1, True, "evaluations without improvement before stopping; null never stops"),
    "train.remine_every": (1, True, "optimizer steps between re-minings; null never re-mines"),
    "train.mini_batch_size": (1, True, "texts per GradCache mini-batch; null turns GradCache off"),
    "data.num_negatives": (0, False, "hard negatives per query; 0 uses in-batch negatives only"),
    "data.max_rows": (1, True, "rows read; null reads every row"),
    "logger.every_n_steps": (1, False, "optimizer steps between metric records"),
    "eval.every_n_steps": (1, True, "optimizer steps between evaluations; null evaluates before and after only"),
    "distill.unlabeled.batch_size": (2, True, "unlabeled texts per step and process (each is scored against the rest)"),
}


def check_train_config(cfg: Any) -> None:
    """Refuse counts the schema's types allow but training cannot use, naming the key, the value and the range."""
    for key, (low, nullable, meaning) in _BOUNDS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and nullable:
            continue
        if value is None or isinstance(value, bool) or value < low:
            allowed = f">= {low}" + (" or null" if nullable else "")
            raise ValueError(f"{key}={value}: must be {allowed} ({meaning})")
    data_format = OmegaConf.select(cfg, "data.format", default="auto")
    if data_format not in ("auto", "jsonl", "hf"):  # trainer.data.sources.FORMATS, checked before a model loads
        raise ValueError(f"data.format={data_format}: must be auto, jsonl or hf")
    columns = OmegaConf.select(cfg, "data.columns", default=None)
    if columns is not None and not isinstance(columns, Mapping):
        raise ValueError(f"data.columns={columns}: must be a mapping of column to schema field, e.g. "
                         "data.columns={question: query, answer: pos}")
    mixed = OmegaConf.select(cfg, "train.mixed_precision", default="auto")
    if mixed not in ("auto", "no", "bf16", "fp16"):
        raise ValueError(f"train.mixed_precision={mixed}: must be auto (bf16 where the hardware computes it "
                         "natively, else no), no, bf16 or fp16")
    check_keep_best(cfg)
    check_streaming(cfg)
    if OmegaConf.select(cfg, "distill.unlabeled.files", default=None) and cfg.train.mini_batch_size:
        raise ValueError("distill.unlabeled with train.mini_batch_size (GradCache) is not supported: the unlabeled "
                         "texts are encoded in one pass; set train.mini_batch_size=null or distill.unlabeled.files=[]")


def check_keep_best(cfg: Any) -> None:
    """``train.keep_best`` names a score of a configured eval task; early stopping watches that score."""
    metric = OmegaConf.select(cfg, "train.keep_best", default=None)
    if OmegaConf.select(cfg, "train.early_stopping_patience", default=None) is not None and not metric:
        raise ValueError("train.early_stopping_patience needs train.keep_best=<task>/<score>: the score it watches")
    if not metric:
        return
    tasks = [t.name for t in OmegaConf.select(cfg, "eval.tasks", default=None) or []]
    if not tasks:
        raise ValueError(f"train.keep_best={metric}: needs eval.tasks (and eval.every_n_steps to compare steps)")
    if "/" not in metric or metric.split("/", 1)[0] not in tasks:
        raise ValueError(f"train.keep_best={metric}: must be <task>/<score> of an eval task ({', '.join(tasks)}), "
                         f"e.g. {tasks[0]}/ndcg_at_10")


def check_streaming(cfg: Any) -> None:
    """``data.streaming=true`` never holds the whole data: refuse what needs it, naming the setting."""
    if not OmegaConf.select(cfg, "data.streaming", default=False):
        return
    from trainer.teachers.kinds import is_kind

    teacher = OmegaConf.select(cfg, "teacher", default=None)
    needs_all = {
        "teacher": teacher is not None and not is_kind(teacher, "precomputed"),
        "data.task_homogeneous": bool(OmegaConf.select(cfg, "data.task_homogeneous", default=False)),
        "data.source_weights": OmegaConf.select(cfg, "data.source_weights", default=None) is not None,
        "train.remine_every": bool(OmegaConf.select(cfg, "train.remine_every", default=None)),
    }
    why = {"teacher": "the teacher embeds or scores every training text before the first step (teacher=precomputed "
                      "streams: its scores ride in the rows)",
           "data.task_homogeneous": "batches of one task are planned over the whole data",
           "data.source_weights": "a mixture draws each epoch from every source's rows",
           "train.remine_every": "re-mining searches every training row"}
    for setting, on in needs_all.items():
        if on:
            raise ValueError(f"data.streaming=true cannot be combined with {setting}: {why[setting]}. Set "
                             "data.streaming=false, or drop the setting")
    if OmegaConf.select(cfg, "data.shuffle_buffer", default=1) < 1:
        raise ValueError(f"data.shuffle_buffer={cfg.data.shuffle_buffer}: must be >= 1 (rows held for shuffling)")
