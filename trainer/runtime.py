"""Process and device setup, and the precision rule by hardware: one place for every stage outside training.

    python -c "from trainer.runtime import setup_processes; print(setup_processes())"   # (device, is rank 0)

Training gets its processes and devices from Accelerate (``Accelerator``); mining, evaluation, the watcher,
export and the teacher cache get them here. Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1)
``setup_processes`` joins the process group (NCCL with one GPU per process, gloo on CPU), so encoding is
sharded by ``trainer.encoding.encode_cached``; a single process takes the GPU when there is one.

The precision rule (``autocast_dtype``): ``auto`` is bf16 on CUDA, float32 elsewhere; ``fast`` is bf16 wherever the
hardware computes it natively (CUDA, or a CPU with AVX512-BF16/AMX through oneDNN); ``float32`` / ``bfloat16`` as
named.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist

from trainer.distributed import world

PRECISIONS = ("auto", "fast", "float32", "bfloat16")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; anything else as torch names it (``cuda:1``, ``cpu``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup_processes(device: str | torch.device = "auto") -> tuple[torch.device, bool]:
    """Join the process group when launched with several processes; returns (device of this process, is rank 0).

    ``device`` ``cpu...`` keeps every process on the CPU (gloo) even where there are GPUs.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device(f"cuda:{local}"), is_main_process()
    return pick_device(device), is_main_process()


def is_main_process() -> bool:
    """Rank 0 (or no process group): the one process that writes files."""
    return world()[0] == 0


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The autocast dtype for encoding on ``device`` under ``precision`` (None = float32); see the module docstring."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    if precision == "fast" and device.type == "cpu" and native_cpu_bf16():
        return torch.bfloat16
    return None


def training_mixed_precision(setting: str) -> str:
    """``train.mixed_precision`` as Accelerate takes it: ``auto`` = ``bf16`` where the hardware computes bf16
    natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX), ``no`` elsewhere; others as named. Weights
    and optimizer state stay float32 (autocast); losses are computed in float32 on pooled embeddings."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_cpu_bf16() else "no"


def native_cpu_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (a cold ``bench/mine.py`` run: 1.66x float32's speed). On
    other CPUs oneDNN would emulate bf16, which is slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in checks if check is not None)
