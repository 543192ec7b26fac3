"""Run under torchrun (2 processes, gloo): InfoNCE over gathered embeddings equals one process on the whole batch.

    torchrun --nproc_per_node 2 tests/dist_infonce.py OUT.json
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from trainer.distributed import exit_process_group
from trainer.losses.infonce import InfoNCE


def make_batch(seed: int = 0, queries: int = 4, group: int = 3, dim: int = 16) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, dim, generator=gen)  # a shared "model": emb = normalize(x @ W)
    xq = torch.randn(queries, dim, generator=gen)
    xp = torch.randn(queries * group, dim, generator=gen)
    ids = torch.arange(queries * group)
    ids[5] = ids[0]  # an in-batch copy of query 0's positive (lands on the other rank's half)
    return weight, xq, xp, ids


def loss_and_grad(weight: torch.Tensor, xq: torch.Tensor, xp: torch.Tensor, ids: torch.Tensor,
                  symmetric: bool) -> tuple[float, torch.Tensor]:
    w = weight.clone().requires_grad_(True)
    q = torch.nn.functional.normalize(xq @ w, dim=-1)
    p = torch.nn.functional.normalize(xp @ w, dim=-1)
    loss = InfoNCE(temperature=0.1, symmetric=symmetric)(q, p, ids)
    loss.backward()
    return loss.item(), w.grad


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for symmetric in (False, True):
        weight, xq, xp, ids = make_batch()
        group = xp.shape[0] // xq.shape[0]
        local = xq.shape[0] // world
        sl_q = slice(rank * local, (rank + 1) * local)
        sl_p = slice(rank * local * group, (rank + 1) * local * group)
        loss, grad = loss_and_grad(weight, xq[sl_q], xp[sl_p], ids[sl_p], symmetric)
        # DDP's convention: average the loss and the parameter gradients over processes.
        loss_t = torch.tensor(loss)
        dist.all_reduce(loss_t)
        dist.all_reduce(grad)
        results[str(symmetric)] = {"loss": loss_t.item() / world, "grad": (grad / world).tolist()}
    if rank == 0:
        with open(sys.argv[1], "w") as handle:
            json.dump(results, handle)
    exit_process_group()  # barrier, destroy, and exit without the teardown race (trainer/distributed.py)


if __name__ == "__main__":
    main()
