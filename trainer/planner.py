"""The batch plan, printed before training and written to ``<run>/plan.json``: what one step will see and cost.

    python -m trainer.train experiment=demo        # the plan is printed first
    pytest tests/test_planner.py

* batches: per-device batch, world size, gathered batch (what the contrastive loss sees), accumulation,
  GradCache mini-batch;
* negatives per query: in-batch (every other passage of the gathered batch) and hard (from the data);
* memory: an estimate of activation memory per forward/backward mini-batch, from Korthikanti et al. 2022
  ("Reducing Activation Recomputation in Large Transformer Models"): per layer ``s*b*h*(34 + 5*a*s/h)`` bytes
  at 16-bit (x2 at fp32; ``2*s*b*h`` with activation checkpointing), plus weights, gradients and AdamW state;
* warnings where near-duplicate texts (equal after lowercasing and dropping punctuation/whitespace) would
  be false in-batch negatives: exact copies are kept apart by the batch sampler and masked by the loss, near
  copies are not.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def near_key(text: str) -> str:
    """Texts equal under this key are near-duplicates (case, punctuation and spacing ignored)."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def activation_bytes(layers: int, hidden: int, heads: int, texts: int, length: int, bytes_per_value: int,
                     checkpointing: bool) -> int:
    """Activation memory of ``texts`` sequences of ``length`` tokens through ``layers`` transformer layers."""
    if checkpointing:  # only each layer's input is kept; one layer is recomputed at a time
        per_layer_full = length * texts * hidden * (34 + 5 * heads * length / hidden) * bytes_per_value / 2
        return int(layers * 2 * length * texts * hidden * bytes_per_value / 2 + per_layer_full)
    return int(layers * length * texts * hidden * (34 + 5 * heads * length / hidden) * bytes_per_value / 2)


@dataclass
class Plan:
    per_device_batch: int
    world_size: int
    gathered_batch: int
    gradient_accumulation_steps: int
    queries_per_optimizer_step: int
    mini_batch_size: Optional[int]
    passages_per_query: int
    negatives_per_query_in_batch: int
    negatives_per_query_hard: int
    activation_gib_per_mini_batch: float
    weights_and_optimizer_gib: float
    trainable_parameters: int
    total_parameters: int
    near_duplicate_rows: int
    expected_false_negatives_per_query: float
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        mini = (f"GradCache mini-batches of {self.mini_batch_size} texts" if self.mini_batch_size
                else "no GradCache (the whole per-device batch in one forward)")
        lines = [
            f"plan: {self.per_device_batch} queries per device x {self.world_size} processes = gathered batch "
            f"{self.gathered_batch} (x {self.gradient_accumulation_steps} accumulation = "
            f"{self.queries_per_optimizer_step} queries per optimizer step); {mini}",
            f"plan: negatives per query: {self.negatives_per_query_in_batch} in-batch + "
            f"{self.negatives_per_query_hard} hard ({self.passages_per_query} passages per query)",
            f"plan: memory estimate: {self.activation_gib_per_mini_batch * 1024:.1f} MiB activations per mini-batch"
            f" + {self.weights_and_optimizer_gib * 1024:.1f} MiB weights/gradients/AdamW "
            f"({self.trainable_parameters:,} of {self.total_parameters:,} parameters train)",
        ]
        lines += [f"plan: WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def write(self, run_root: Path) -> None:
        from trainer.run import write_json_atomic

        write_json_atomic(Path(run_root) / "plan.json", asdict(self))


def duplicate_stats(examples: Sequence[Any], gathered: int) -> tuple[int, float]:
    """(rows whose positive has a near-duplicate passage in another row but no exact copy there, expected
    false in-batch negatives per query for uniformly random batches of ``gathered`` queries)."""
    owners: dict[str, set[int]] = {}
    exact: dict[str, set[int]] = {}
    for i, ex in enumerate(examples):
        for text in list(ex.pos) + list(ex.neg or []):
            owners.setdefault(near_key(text), set()).add(i)
            exact.setdefault(text, set()).add(i)
    rows, expected = 0, 0.0
    n = max(len(examples), 2)
    for i, ex in enumerate(examples):
        exact_others = set().union(*(exact[t] for t in ex.pos)) - {i}
        near_others = set().union(*(owners[near_key(t)] for t in ex.pos)) - {i} - exact_others
        if near_others:
            rows += 1
            expected += len(near_others) * (gathered - 1) / (n - 1)  # chance each shares the batch
    return rows, expected / n


def make_plan(cfg: Any, objective: Any, examples: Sequence[Any], world_size: int,
              dropped: int = 0) -> Plan:
    """Build the plan from the composed config, the (unwrapped) objective and the training examples."""
    from trainer.runtime import training_mixed_precision

    train, data, model = cfg.train, cfg.data, cfg.model
    backbone_config = objective.encoder.backbone.config
    layers = int(getattr(backbone_config, "num_hidden_layers", 12))
    hidden = int(getattr(backbone_config, "hidden_size", 768))
    heads = int(getattr(backbone_config, "num_attention_heads", 12))
    group = 1 + int(data.num_negatives)
    gathered = int(train.batch_size) * world_size
    mini = train.get("mini_batch_size")
    bytes_per_value = 2 if training_mixed_precision(train.mixed_precision) in ("bf16", "fp16") else 4
    longest = max(int(model.max_length_query), int(model.max_length_passage))
    if mini:
        act = activation_bytes(layers, hidden, heads, int(mini), longest, bytes_per_value, model.gradient_checkpointing)
    else:  # queries and all passages of the device batch are alive together
        act = (activation_bytes(layers, hidden, heads, int(train.batch_size), int(model.max_length_query),
                                bytes_per_value, model.gradient_checkpointing)
               + activation_bytes(layers, hidden, heads, int(train.batch_size) * group,
                                  int(model.max_length_passage), bytes_per_value, model.gradient_checkpointing))
    params = list(objective.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    state_bytes = total * 4 + trainable * (4 + 8)  # fp32 weights; gradients and two AdamW moments for trainable
    rows, false_negatives = duplicate_stats(examples, gathered)
    warnings: list[str] = []
    if false_negatives * gathered >= 0.5:
        warnings.append(f"{rows} of {len(examples)} rows have a positive with a near-duplicate text in another row "
                        f"(equal up to case/punctuation/spacing): about {false_negatives * gathered:.1f} false "
                        "in-batch negatives per gathered batch; deduplicate the data (normalise texts) or lower "
                        "the batch size")
    if dropped >= gathered and dropped > 0.05 * len(examples):  # fewer than a batch: the epoch's partial last one
        warnings.append(f"{dropped} of {len(examples)} rows were left out of an epoch because their texts clash "
                        "with every open batch (many exact duplicates, or a batch too large for the data)")
    if world_size * int(train.batch_size) * group < 2:
        warnings.append("a gathered batch of one passage has no in-batch negatives")
    return Plan(per_device_batch=int(train.batch_size), world_size=world_size, gathered_batch=gathered,
                gradient_accumulation_steps=int(train.gradient_accumulation_steps),
                queries_per_optimizer_step=gathered * int(train.gradient_accumulation_steps),
                mini_batch_size=int(mini) if mini else None, passages_per_query=gathered * group,
                negatives_per_query_in_batch=gathered * group - group, negatives_per_query_hard=group - 1,
                activation_gib_per_mini_batch=round(act / 2**30, 4),
                weights_and_optimizer_gib=round(state_bytes / 2**30, 4), trainable_parameters=trainable,
                total_parameters=total, near_duplicate_rows=rows,
                expected_false_negatives_per_query=round(false_negatives, 6), warnings=warnings)
