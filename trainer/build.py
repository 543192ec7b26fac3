"""Factories: config -> encoder, data, objective, optimizer, scheduler, evaluator.

    python -m trainer.train experiment=demo      # calls these through trainer.loop.train
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import hydra
import torch
from omegaconf import DictConfig
from transformers import get_scheduler

from trainer.data.dataset import Collator, ContrastiveDataset, UniqueBatchSampler, load_examples
from trainer.evaluation.retrieval import evaluate_retrieval, load_beir
from trainer.models.encoder import Encoder
from trainer.objective import Objective


def build_encoder(cfg: DictConfig) -> Encoder:
    encoder = Encoder.from_config(cfg)
    if cfg.gradient_checkpointing:
        encoder.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return encoder


def build_data(cfg: DictConfig, encoder: Encoder, batch_size: int, seed: int, world_size: int, rank: int,
               log: Callable[[str], None] = print) -> tuple[torch.utils.data.DataLoader, UniqueBatchSampler]:
    examples, report = load_examples(list(cfg.train_files), cfg.format, cfg.on_error, cfg.max_rows, cfg.streaming)
    log(f"data: {report.summary()}")
    dataset = ContrastiveDataset(examples, cfg.num_negatives, seed)
    sampler = UniqueBatchSampler(dataset, batch_size, seed, world_size, rank, cfg.task_homogeneous)
    if len(sampler) == 0:
        raise ValueError(f"{len(examples)} training rows make no full global batch of {batch_size * world_size}: "
                         "lower train.batch_size")
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(encoder.tokenize),
                                         num_workers=cfg.num_workers)
    return loader, sampler


def build_objective(cfg: DictConfig, encoder: Encoder) -> Objective:
    return Objective(encoder, hydra.utils.instantiate(cfg.loss))


def build_optimizer(cfg: DictConfig, objective: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; a learnable temperature may get its own lr."""
    decay, no_decay, temperature = [], [], []
    for name, param in objective.named_parameters():
        if not param.requires_grad:
            continue
        if "log_inv_temperature" in name:
            temperature.append(param)
        elif param.ndim < 2:
            no_decay.append(param)
        else:
            decay.append(param)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}]
    if temperature:
        groups.append({"params": temperature, "weight_decay": 0.0, "lr": cfg.temperature_lr or cfg.lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(cfg.scheduler, cfg.scheduler)
    if name not in ("linear", "cosine", "constant_with_warmup"):
        raise ValueError(f"optim.scheduler must be linear, cosine or constant, got {cfg.scheduler!r}")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


class Evaluator:
    """Runs the configured eval tasks on an encoder; returns ``{"<task>/<metric>": value}``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.tasks = []
        for task in cfg.tasks:
            if task.kind != "retrieval":
                raise ValueError(f"eval task {task.name}: kind {task.kind!r} is not supported by the training-time "
                                 "evaluator (retrieval only); run python -m trainer.evaluate for other kinds")
            self.tasks.append((task, load_beir(task.path, task.split, task.max_queries)))

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        results: dict[str, float] = {}
        for task, data in self.tasks:
            scores = evaluate_retrieval(encoder, data, self.cfg.batch_size, task=task.task)
            results.update({f"{task.name}/{k}": v for k, v in scores.items()})
        return results

    def main_metric(self) -> Optional[str]:
        if self.cfg.metric:
            return self.cfg.metric
        if self.tasks:
            task = self.tasks[0][0]
            return f"{task.name}/{task.main_score}"
        return None
