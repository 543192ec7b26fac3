"""The training loop: one readable function from config to trained, saved, evaluated model.

    python -m trainer.train experiment=demo                                  # one process
    accelerate launch --multi_gpu --num_processes 8 -m trainer.train ...     # DDP (see launch/)

Setup -> for each batch: ``accumulate`` -> loss parts -> backward -> step (counted only when gradients
sync) -> ``maybe_log`` / ``maybe_eval`` / ``maybe_save``. Resume state (``accelerator.save_state``: model,
optimizer, scheduler, RNG, plus our data position) and exported checkpoints are separate folders.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from omegaconf import DictConfig
from tqdm.auto import tqdm

from trainer.build import Evaluator, build_data, build_encoder, build_objective, build_optimizer, build_scheduler
from trainer.gradcache import cached_step
from trainer.logging import MetricsLogger
from trainer.models.checkpoint import save_checkpoint
from trainer.planner import make_plan
from trainer.teachers.targets import TeacherCollator, build_teacher_targets
from trainer.run import RunDir, check_resume_config, config_hash, step_name


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` already consumed
    samples: int = 0  # queries seen, all processes together


class NonFiniteLoss(RuntimeError):
    pass


def resolve_resume(cfg: DictConfig, run: RunDir) -> Optional[Path]:
    latest = run.latest_state()
    if cfg.resume is None:
        if latest is not None:
            raise FileExistsError(f"{run.root} already holds training state ({latest.name}); "
                                  "continue it with resume=auto, or pick another name=...")
        return None
    if cfg.resume == "auto":
        return latest  # None: nothing to resume, start fresh
    path = Path(cfg.resume)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"resume={path}: not a complete state folder (no trainer_state.json)")
    return path


def train(cfg: DictConfig) -> Optional[float]:
    """Train as configured; returns the main eval metric after training (for sweeps), or None."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    accum = cfg.train.gradient_accumulation_steps
    # cpu=True where no accelerator exists: Accelerate then picks up torchrun's WORLD_SIZE (gloo) instead of
    # silently training one process per rank on the whole data.
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=accum,
                              cpu=not torch.accelerator.is_available())
    set_seed(cfg.train.seed)
    main = accelerator.is_main_process
    log = accelerator.print
    run = RunDir(cfg.run_dir, main)
    resume_from = resolve_resume(cfg, run)
    if resume_from is not None:
        check_resume_config(resume_from, cfg)
    else:
        run.init(cfg, accelerator.num_processes)
    accelerator.wait_for_everyone()

    encoder = build_encoder(cfg.model)
    loader, sampler = build_data(cfg.data, encoder, cfg.train.batch_size, cfg.train.seed,
                                 accelerator.num_processes, accelerator.process_index, log)
    # The teacher (if any) runs here, once, over every training text (cached on disk), then is dropped; batches
    # get its embeddings or scores from memory (trainer/teachers/targets.py).
    targets = build_teacher_targets(cfg, loader.dataset.examples, accelerator.device, log)
    if targets is not None:
        loader.collate_fn = TeacherCollator(loader.collate_fn, targets)
    steps_per_epoch = len(sampler) // accum
    if steps_per_epoch == 0:
        raise ValueError(f"{len(sampler)} batches per epoch < gradient_accumulation_steps={accum}")
    batches_per_epoch = steps_per_epoch * accum  # whole accumulation windows only: syncs align with epochs
    total_steps = cfg.train.max_steps or steps_per_epoch * cfg.train.epochs
    objective = build_objective(cfg, encoder, targets.dim if targets is not None else None)
    optimizer = build_optimizer(cfg.optim, objective)
    # The scheduler is stepped by us once per optimizer step (Accelerate's wrapper would step it once per
    # process), and registered so save_state/load_state carry it.
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped = accelerator.unwrap_model(objective)
    evaluator = Evaluator(cfg.eval) if cfg.eval.tasks else None
    logger = MetricsLogger(cfg.logger, run, cfg)
    global_batch = cfg.train.batch_size * accelerator.num_processes

    state = TrainState()
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = TrainState(**json.loads((resume_from / "trainer_state.json").read_text())["state"])
        log(f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
        run.truncate_logs(state.step)
    log(f"training {total_steps} steps: {steps_per_epoch} per epoch, global batch {global_batch} x {accum} "
        f"accumulation, {cfg.data.num_negatives} hard negatives per query, {accelerator.num_processes} processes")
    plan = make_plan(cfg, unwrapped, sampler.dataset.examples, accelerator.num_processes, sampler.dropped)
    log(plan.text())  # batches, negatives per query, memory estimate, duplicate warnings (also <run>/plan.json)
    if main:
        plan.write(run.root)

    def maybe_eval(force: bool = False) -> dict[str, float]:
        every = cfg.eval.every_n_steps
        if evaluator is None or not (force or (every and state.step % every == 0)):
            return {}
        results: dict[str, float] = {}
        if main:
            started = time.perf_counter()
            results = evaluator(unwrapped.encoder)
            logger.log({"step": state.step, **results, "eval_seconds": time.perf_counter() - started}, "eval.jsonl")
        accelerator.wait_for_everyone()
        return results

    def save(final: bool = False) -> None:
        name = step_name(state.step)
        tmp = run.states / f".tmp-{name}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # every process writes its RNG state; rank 0 the rest
        accelerator.wait_for_everyone()
        if main:
            (tmp / "trainer_state.json").write_text(json.dumps(
                {"state": asdict(state), "config_hash": config_hash(cfg), "total_steps": total_steps}, indent=2))
            target = run.states / name
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)  # the state folder exists under its final name only when complete
            run.rotate(run.states, cfg.train.keep_last)
            save_checkpoint(unwrapped.encoder, run.checkpoints / name,
                            {"step": state.step, "config_hash": config_hash(cfg), "final": final,
                             "run": str(run.root), "task_instructions": dict(cfg.model.instructions)})
            if cfg.eval.on_save and cfg.eval.tasks:
                # Rank 0 scores the new checkpoint from disk, as `python -m trainer.evaluate run_dir=... watch=true`
                # would (other ranks wait); multi-GPU runs should use that separate watcher instead.
                from trainer.evaluation.watcher import evaluate_saved

                evaluate_saved(run.root, run.checkpoints / name, list(cfg.eval.tasks), batch_size=cfg.eval.batch_size,
                               device=str(accelerator.device), log=log)
            run.rotate(run.checkpoints, cfg.train.keep_last)
        accelerator.wait_for_everyone()

    def maybe_save() -> None:
        every = cfg.train.save_every_n_steps
        if every and state.step % every == 0 and state.step < total_steps:
            save()

    from trainer.mining.remine import build_remine

    remine = build_remine(cfg, getattr(sampler, "dataset", None))  # None unless train.remine_every (ANCE-style)

    def maybe_remine() -> None:
        """Refresh every example's negatives with the current weights (same result on every rank)."""
        every = cfg.train.remine_every
        if remine is not None and state.step % every == 0 and state.step < stop_at:
            record = remine(unwrapped.encoder)
            logger.log({"step": state.step, **record})
            log(f"step {state.step}: re-mined negatives {record}")

    window = {"start": time.perf_counter(), "samples": 0, "parts": {}, "count": 0}

    def maybe_log(grad_norm: Optional[float]) -> None:
        if state.step % cfg.logger.every_n_steps and state.step != total_steps:
            return
        elapsed = time.perf_counter() - window["start"]
        record = {"step": state.step, "epoch": state.epoch, "samples": state.samples,
                  **{k: v / window["count"] for k, v in window["parts"].items()},
                  "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                  "temperature": unwrapped.contrastive.temperature,
                  "samples_per_s": window["samples"] / max(elapsed, 1e-9)}
        logger.log(record)
        window.update(start=time.perf_counter(), samples=0, parts={}, count=0)

    before = maybe_eval(force=cfg.eval.before_training and state.step == 0)
    progress = tqdm(total=total_steps, initial=state.step, disable=not (main and cfg.train.progress_bar),
                    desc="train", dynamic_ncols=True)
    stop_at = min(total_steps, cfg.train.stop_after_steps or total_steps)
    objective.train()
    while state.step < stop_at:
        sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
        for batch in loader:
            batch = send_to_device(batch, accelerator.device)
            with accelerator.accumulate(objective):
                if cfg.train.mini_batch_size:  # GradCache: forward and backward happen inside
                    parts = cached_step(accelerator, objective, batch, cfg.train.mini_batch_size)
                else:
                    parts = objective(batch)
                loss_sum = accelerator.reduce(parts["loss"].detach().clone(), "sum")
                if not torch.isfinite(loss_sum):
                    raise NonFiniteLoss(f"non-finite loss ({loss_sum.item()}) at step {state.step + 1} (epoch "
                                        f"{state.epoch}, batch {state.batch_in_epoch}): lower optim.lr, check the "
                                        "data, or use train.mixed_precision=bf16 instead of fp16")
                if not cfg.train.mini_batch_size:
                    accelerator.backward(parts["loss"])
                grad_norm = None
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    grad_norm = float(accelerator.clip_grad_norm_(objective.parameters(), cfg.optim.max_grad_norm))
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            for key, value in parts.items():
                window["parts"][key] = window["parts"].get(key, 0.0) + float(value.detach())
            window["count"] += 1
            window["samples"] += global_batch
            state.samples += global_batch
            state.batch_in_epoch += 1
            end_of_epoch = state.batch_in_epoch >= batches_per_epoch
            if accelerator.sync_gradients:
                state.step += 1
                if end_of_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                progress.update(1)
                progress.set_postfix(loss=f"{float(parts['loss'].detach()):.4f}")
                maybe_log(grad_norm)
                maybe_eval()
                maybe_save()
                maybe_remine()
                if state.step >= stop_at:
                    break
            if end_of_epoch:
                break
    progress.close()

    finished = state.step >= total_steps
    save(final=finished)
    after = maybe_eval(force=True)
    logger.finish()
    if finished:
        run.mark_done({"step": state.step, "final_checkpoint": str(run.checkpoints / step_name(state.step))})
    if main and before and after:
        log(comparison_table(before, after))
    metric = evaluator.main_metric() if evaluator else None
    return after.get(metric) if metric else None


def comparison_table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = ["| metric | before | after | change |", "|---|---|---|---|"]
    for key in after:
        if key in before:
            lines.append(f"| {key} | {before[key]:.4f} | {after[key]:.4f} | {after[key] - before[key]:+.4f} |")
    return "\n".join(lines)
