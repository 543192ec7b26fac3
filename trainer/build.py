"""Factories: config -> encoder, data, objective, optimizer, scheduler, evaluator.

    python -m trainer.train experiment=demo      # calls these through trainer.loop.train
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Optional

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from trainer.data.dataset import Collator, ContrastiveDataset, UniqueBatchSampler, load_data_config, source_options
from trainer.data.mixture import Mixture
from trainer.models.encoder import Encoder
from trainer.objective import Objective


def build_encoder(cfg: DictConfig) -> Encoder:
    encoder = Encoder.from_config(cfg)
    if cfg.get("init_from_teacher_layers"):
        from trainer.models.layer_subset import keep_layers

        keep_layers(encoder.backbone, list(cfg.init_from_teacher_layers))  # DistilBERT-style student
    pooler = getattr(encoder.backbone, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        # A BERT-style pooler output never reaches the embedding: frozen, so DDP does not wait for its gradients.
        pooler.requires_grad_(False)
    if cfg.get("bidirectional"):
        from trainer.models.decoder import make_bidirectional

        make_bidirectional(encoder.backbone)
    if cfg.get("lora") and cfg.lora.enabled:
        from trainer.models.lora import apply_lora

        apply_lora(encoder, cfg.lora)
    if cfg.gradient_checkpointing:
        encoder.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return encoder


def build_data(cfg: DictConfig, encoder: Encoder, batch_size: int, seed: int, world_size: int, rank: int,
               log: Callable[[str], None] = print) -> tuple[torch.utils.data.DataLoader, UniqueBatchSampler]:
    if cfg.get("streaming", False):
        return build_stream(cfg, encoder, batch_size, seed, world_size, rank, log)
    examples, report = load_data_config(cfg)
    log(f"data: {report.summary()}")
    prompts = encoder.spec.prompts
    mixture = None
    if cfg.get("source_weights") is not None:
        mixture = Mixture.from_weights(cfg.source_weights, report.sources, [str(f) for f in cfg.train_files])
        log(mixture.describe())
    dataset = ContrastiveDataset(examples, cfg.num_negatives, seed, prompts.instruction_paraphrases,
                                 prompts.symmetric_tasks, cfg.task_homogeneous, mixture)
    sampler = UniqueBatchSampler(dataset, batch_size, seed, world_size, rank, cfg.task_homogeneous)
    if len(sampler) == 0:
        raise ValueError(f"{len(examples)} training rows make no full global batch of {batch_size} per process x "
                         f"{world_size} processes ({sampler.dropped_in(0)} rows left out of epoch 0): lower "
                         "train.batch_size, or add rows")
    # Its own generator: each iter(loader) draws a worker seed, which from the global generator would shift every
    # later dropout mask of a resumed run (it starts a fresh iterator mid-epoch) by one draw.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(encoder.tokenize),
                                         num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def build_stream(cfg: DictConfig, encoder: Encoder, batch_size: int, seed: int, world_size: int, rank: int,
                 log: Callable[[str], None] = print) -> tuple[torch.utils.data.DataLoader, Any]:
    """``data.streaming=true``: rows read lazily through a seeded shuffle buffer (``trainer.data.stream``); the
    ``StreamingData`` is both the loader's dataset and the sampler the loop drives."""
    from trainer.data.stream import StreamingData

    options, caps = source_options(cfg)
    prompts = encoder.spec.prompts
    data = StreamingData(list(cfg.train_files), options, caps=caps, max_rows=cfg.get("max_rows"),
                         num_negatives=cfg.num_negatives, seed=seed, batch_size=batch_size, world_size=world_size,
                         rank=rank, buffer_size=cfg.shuffle_buffer, instructions=prompts.instruction_paraphrases,
                         symmetric_tasks=prompts.symmetric_tasks)
    log(f"data (streamed through a shuffle buffer of {cfg.shuffle_buffer} rows): {data.report.summary()}")
    if data.num_batches(0) == 0:
        raise ValueError(f"{data.rows} training rows make no full global batch of {batch_size} per process x "
                         f"{world_size} processes: lower train.batch_size, or add rows")
    # batch_size=None: the dataset yields each process's batch of samples; the collator tokenizes it. Its own
    # generator, as above: iter(loader) must not draw from the global one that dropout (and a resume) depend on.
    loader = torch.utils.data.DataLoader(data, batch_size=None, collate_fn=Collator(encoder.tokenize),
                                         generator=torch.Generator().manual_seed(seed))
    return loader, data


def build_objective(cfg: DictConfig, encoder: Encoder, teacher_dim: Optional[int] = None) -> Objective:
    from trainer.teachers.distill import build_distill_losses

    distill = build_distill_losses(cfg.get("distill"), encoder.dim, teacher_dim)
    return Objective(encoder, build_contrastive(cfg.loss), distill)


def build_contrastive(cfg: DictConfig) -> torch.nn.Module:
    """The contrastive loss named by ``loss._target_``, wrapped in Matryoshka when ``loss.matryoshka_dims`` is set."""
    loss_cfg = OmegaConf.to_container(cfg, resolve=True)
    dims = loss_cfg.pop("matryoshka_dims", None)  # type: ignore[union-attr]
    contrastive = hydra.utils.instantiate(loss_cfg)
    if dims:
        from trainer.losses.matryoshka import Matryoshka

        contrastive = Matryoshka(contrastive, dims)  # the same loss on 64/128/... prefixes, renormalised
    return contrastive


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
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, name, warmup, total_steps))


def lr_factor(name: str, warmup: int, total: int, step: int) -> float:
    """The lr multiplier at ``step``: transformers' linear / cosine / constant_with_warmup schedules (same values;
    written out because importing ``transformers.get_scheduler`` also imports peft, ~8 s per process)."""
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant_with_warmup":
        return 1.0
    if name == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine, half a cycle


class Evaluator:
    """Runs the configured eval tasks on an encoder; returns ``{"<task>/<metric>": value}``."""

    def __init__(self, cfg: DictConfig) -> None:
        from trainer.evaluation.kinds import load_task
        from trainer.evaluation.tasks import check_task_names

        check_task_names(cfg.tasks)
        self.cfg = cfg
        self.tasks = [(task, load_task(task)) for task in cfg.tasks]

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        from trainer.evaluation.kinds import encoder_embed, score_task
        from trainer.runtime import autocast_dtype

        # The CLI's and the watcher's precision rule, so eval.jsonl and eval/<checkpoint>/ agree on every device.
        dtype = autocast_dtype(encoder.device, self.cfg.get("precision") or "auto")
        results: dict[str, float] = {}
        for task, data in self.tasks:
            scores = score_task(task, data, encoder_embed(encoder, task, self.cfg.batch_size, dtype))
            if task.kind == "retrieval" and self.cfg.get("matryoshka_dims"):
                from trainer.evaluation.retrieval import matryoshka_retrieval

                scores.update(matryoshka_retrieval(encoder, data, list(self.cfg.matryoshka_dims),
                                                   self.cfg.batch_size, task=task.task))
            results.update({f"{task.name}/{k}": v for k, v in scores.items()})
        return results

    def main_metric(self) -> Optional[str]:
        if self.cfg.metric:
            return self.cfg.metric
        if self.tasks:
            from trainer.evaluation.kinds import main_metric

            return main_metric(self.tasks[0][0])
        return None
