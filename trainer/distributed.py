"""Cross-process gathering: the one place where embeddings cross devices.

    torchrun --nproc_per_node 2 -m pytest tests/dist_check.py   (see tests/test_distributed.py)

``gather_with_grad`` concatenates a tensor from every process along dim 0, rank-major, and carries gradients
back: in backward every process receives the sum of the gradients all processes computed for its rows. With
DDP averaging parameter gradients over processes, a loss that is the mean over local queries then gives the
same gradients as one process on the whole batch (tests/test_distributed.py checks this).
"""
from __future__ import annotations

import logging
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_gather_single


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each process -> (world * n, ...) everywhere, differentiable. Every rank must pass equal n."""
    _, size = world()
    if size == 1:
        return tensor
    gathered = all_gather_single(tensor.contiguous(), 0, dist.group.WORLD)
    # Functional collectives return a lazily-waited tensor; make it a plain one.
    return gathered * 1 if gathered.requires_grad else gathered.clone()


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    _, size = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def local_offset(local_count: int) -> int:
    """Index of this process's first row in a gathered tensor of ``local_count`` rows per process."""
    rank, _ = world()
    return rank * local_count


def close_process_group() -> None:
    """Every process waits until all are done with every collective (barrier), then the default process group
    is destroyed. Nothing happens outside a process group. For processes that go on running (tests, forked
    workers); a program's entry point ends with ``exit_process_group`` instead."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process_group(code: int = 0) -> None:
    """End a multi-process program cleanly: ``close_process_group``, flush, and leave with ``os._exit(code)``.

    Interpreter shutdown is skipped on purpose. A process group something still references (a DDP model, the
    functional collectives) keeps gloo's worker threads alive after ``destroy_process_group``; a worker
    that drops the last reference to a finished collective decrefs its Python tensors, which needs the GIL, and
    during ``Py_FinalizeEx`` that thread is ended by ``pthread_exit`` inside a C++ frame: ``std::terminate``
    ("terminate called without an active exception", SIGABRT) after every result was written. Returns without
    doing anything in a single process (no group), where the interpreter ends as usual.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    close_process_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # closed or detached: nothing left to flush
    os._exit(code)
