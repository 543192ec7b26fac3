"""GradCache: the loss of a large (gathered) batch with the activation memory of a small mini-batch.

    python -m trainer.train experiment=demo train.batch_size=1024 train.mini_batch_size=32
    pytest tests/test_gradcache.py

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup". A contrastive loss
couples every query with every passage, so a batch of B cannot simply be split into independent pieces. It can
be split in two stages, because the loss depends on the parameters only through the embeddings:

1. Embed every mini-batch of ``m`` texts **without** autograd (only the (B, D) embeddings are kept), recording
   each mini-batch's random state (torch CPU + CUDA) first.
2. Compute the loss on the whole batch from these embeddings: ``Objective.loss_parts(query, passages, batch)``,
   i.e. the contrastive part, distillation parts and anything else added there, gathered across processes
   exactly as in the plain step. Take its gradient with respect to the embeddings (and to parameters the loss
   owns itself: a learnable temperature, a distillation projection).
3. Re-embed each mini-batch **with** autograd under its restored random state (so dropout masks match) and
   backpropagate the cached embedding gradient through it: ``backward(sum(emb * grad))``. Under DDP all but the
   last mini-batch run in ``no_sync``; the last one carries the loss-owned parameters' gradients too, so DDP
   averages everything in one all-reduce.

The parameter gradients equal the plain step's on the same batch (tests/test_gradcache.py checks 1 and 2
processes to 1e-5); the cost is one extra forward per text (about +33% compute) and no cross-mini-batch
activation memory. Mini-batches never split the rows of one text; each is trimmed to its own longest text.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from trainer.data.batch import Batch

FEATURE_KEYS = ("input_ids", "attention_mask", "pool_mask")


@dataclass
class RngState:
    """The torch CPU generator and, on CUDA, the device generator at one moment."""

    cpu: torch.Tensor
    cuda: Optional[torch.Tensor]
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> "RngState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def trim(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the columns that are padding in every row of this mini-batch (either side). (n, T) -> (n, T')."""
    real = features["attention_mask"].bool().any(dim=0).nonzero().flatten()  # (T_real,)
    if real.numel() == 0:
        return features
    cols = slice(int(real[0]), int(real[-1]) + 1)
    return {k: (v[:, cols] if k in FEATURE_KEYS else v) for k, v in features.items()}


def split_features(features: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """(N, T) token features -> mini-batches of at most ``size`` rows, each trimmed to its own width."""
    n = features["input_ids"].shape[0]
    return [trim({k: v[start:start + size] for k, v in features.items()}) for start in range(0, n, size)]


def minibatch_forward(objective: nn.Module, features: dict[str, torch.Tensor], grad: Optional[torch.Tensor] = None,
                      param_grads: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Run by ``Objective.forward(features, gradcache={...})`` so DDP, FSDP and autocast wrappers apply.

    Without ``grad``: the (n, D) embeddings. With ``grad`` (n, D): the surrogate scalar
    ``sum(emb * grad) + sum_p sum(p * param_grads[p])`` whose gradient is the cached one.
    """
    emb = objective.encoder(**features)  # (n, D)
    if grad is None:
        return emb
    surrogate = (emb * grad.to(emb.dtype)).sum()
    if param_grads:
        params = dict(objective.named_parameters())
        for name, g in param_grads.items():
            surrogate = surrogate + (params[name] * g.to(params[name].dtype)).sum()
    return surrogate


def loss_owned_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters outside the encoder (learnable temperature, distillation projections)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("encoder.")}


def cached_step(accelerator: Accelerator, objective: nn.Module, batch: Batch,
                mini_batch_size: int) -> dict[str, torch.Tensor]:
    """Forward and backward of one batch in mini-batches; returns the detached loss parts.

    ``objective`` is the prepared (possibly DDP/FSDP-wrapped) ``Objective``; the caller steps the optimizer.
    Parameter gradients (scaled by ``accelerator.backward`` for accumulation and fp16) equal the plain step's.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError("train.mini_batch_size (GradCache) needs several backward passes per optimizer step, "
                         "which DeepSpeed's engine does not allow: use DDP or FSDP (launch/), or set "
                         "train.mini_batch_size=null")
    if mini_batch_size < 1:
        raise ValueError(f"train.mini_batch_size must be >= 1, got {mini_batch_size}")
    model = accelerator.unwrap_model(objective)
    device = batch.query["input_ids"].device
    chunks = split_features(batch.query, mini_batch_size)
    n_query = len(chunks)
    chunks += split_features(batch.passage, mini_batch_size)

    # 1. Embeddings without autograd; remember the random state each mini-batch started from.
    states: list[RngState] = []
    embeddings: list[torch.Tensor] = []
    with torch.no_grad():
        for features in chunks:
            states.append(RngState.capture(device))
            embeddings.append(objective(features, gradcache={}))  # (n, D)
    after = RngState.capture(device)

    # 2. Loss on the whole batch and its gradient w.r.t. the embeddings and the loss-owned parameters.
    query = torch.cat(embeddings[:n_query]).detach().requires_grad_(True)  # (B, D)
    passages = torch.cat(embeddings[n_query:]).detach().requires_grad_(True)  # (B*(1+k), D)
    owned = loss_owned_parameters(model)
    with torch.enable_grad():
        parts = model.loss_parts(query, passages, batch)
    inputs = [query, passages, *owned.values()]
    grads = torch.autograd.grad(parts["loss"], inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    emb_grads = list(grads[0].split([len(e) for e in embeddings[:n_query]]))
    emb_grads += list(grads[1].split([len(e) for e in embeddings[n_query:]]))
    param_grads = dict(zip(owned, grads[2:]))

    # 3. Re-forward each mini-batch with autograd under its recorded random state; backprop the cached gradient.
    for i, (features, state, grad) in enumerate(zip(chunks, states, emb_grads)):
        last = i == len(chunks) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(objective):
            state.restore()
            surrogate = objective(features, gradcache={"grad": grad, "param_grads": param_grads if last else None})
            accelerator.backward(surrogate)
    after.restore()  # continue from where the first pass left the generators
    return {k: v.detach() for k, v in parts.items()}
