"""GradCache vs plain step on the tiny model; imported by tests/test_gradcache.py, or run under torchrun:

    torchrun --nproc_per_node 2 tests/dist_gradcache.py MODEL_DIR OUT.json

Every process takes its slice of one global batch; the plain step goes through DDP (gradients averaged), the
cached step through ``trainer.gradcache.cached_step``. Rank 0 writes both losses and gradients to OUT.json.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import torch
from torch import nn

from trainer.data.batch import Batch
from trainer.data.dataset import text_id
from trainer.losses.embedding_distill import EmbeddingDistill
from trainer.losses.infonce import InfoNCE
from trainer.losses.listwise_kl import ListwiseKL
from trainer.models import Encoder, EncoderSpec
from trainer.objective import Objective

QUERIES = 8
NEGATIVES = 2
TEACHER_DIM = 16


def build_objective(model_dir: str, distill: bool, seed: int = 0) -> Objective:
    """Tiny encoder (dropout is turned off by the caller with .eval()) + InfoNCE with a learnable temperature,
    optionally with listwise KL and embedding distillation (its projection is a loss-owned parameter)."""
    torch.manual_seed(seed)
    encoder = Encoder.from_pretrained(model_dir, EncoderSpec(max_length_query=16, max_length_passage=24))
    encoder.backbone.pooler.requires_grad_(False)
    losses = nn.ModuleDict()
    if distill:
        losses["kl"] = ListwiseKL(0.05, 0.05, True, 0.5)
        losses["embed_distill"] = EmbeddingDistill(encoder.dim, TEACHER_DIM, "mse", 2.0)
    return Objective(encoder, InfoNCE(temperature=0.1, learnable_temperature=True), losses)


def global_batch(encoder: Encoder, distill: bool, rank: int = 0, world: int = 1) -> Batch:
    """This rank's slice of a fixed global batch of QUERIES queries with NEGATIVES hard negatives each."""
    gen = torch.Generator().manual_seed(1)
    words = [f"w{i}" for i in range(200)]

    def text(n: int) -> str:
        return " ".join(words[int(j)] for j in torch.randint(0, 200, (n,), generator=gen))

    queries = [text(2 + i % 5) for i in range(QUERIES)]
    passages = [text(4 + (3 * i) % 11) for i in range(QUERIES * (1 + NEGATIVES))]
    passages[5] = passages[0]  # an in-batch copy of query 0's positive (masked as a false negative)
    teacher_q = torch.randn(QUERIES, TEACHER_DIM, generator=gen)
    teacher_p = torch.randn(QUERIES * (1 + NEGATIVES), TEACHER_DIM, generator=gen)
    local = QUERIES // world
    q_rows = slice(rank * local, (rank + 1) * local)
    p_rows = slice(rank * local * (1 + NEGATIVES), (rank + 1) * local * (1 + NEGATIVES))
    batch = Batch(query=encoder.tokenize(queries[q_rows], "query"),
                  passage=encoder.tokenize(passages[p_rows], "passage"),
                  passage_ids=torch.tensor([text_id(p) for p in passages[p_rows]]))
    if distill:
        batch.teacher_query = nn.functional.normalize(teacher_q[q_rows], dim=-1)
        batch.teacher_passage = nn.functional.normalize(teacher_p[p_rows], dim=-1)
    return batch


def grads_of(objective: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in objective.named_parameters() if p.grad is not None}


def step(model_dir: str, distill: bool, cached: bool, mini_batch: int = 3) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward/backward on this process's slice (DDP-wrapped when there are several processes)."""
    from accelerate import Accelerator

    from trainer.gradcache import cached_step

    accelerator = Accelerator(cpu=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    objective = build_objective(model_dir, distill)
    objective.eval()  # dropout off: plain and cached see the same network
    batch = global_batch(objective.encoder, distill, rank, world)
    prepared = accelerator.prepare(objective)
    if cached:
        parts = cached_step(accelerator, prepared, batch, mini_batch)
    else:
        parts = prepared(batch)
        accelerator.backward(parts["loss"])
    loss = accelerator.reduce(parts["loss"].detach(), "mean")
    return float(loss), grads_of(accelerator.unwrap_model(prepared))


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    results: dict[str, Any] = {}
    for distill in (False, True):
        for cached in (False, True):
            loss, grads = step(model_dir, distill, cached)
            results[f"{distill}-{cached}"] = {"loss": loss, "grads": {k: v.tolist() for k, v in grads.items()}}
    import torch.distributed as dist

    from trainer.distributed import exit_process_group

    if dist.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    exit_process_group()  # barrier, destroy, and exit without the teardown race (trainer/distributed.py)


if __name__ == "__main__":
    main()
