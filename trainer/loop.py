"""The training loop: from config to trained, saved, evaluated model.

    python -m trainer.train experiment=demo                                  # one process
    accelerate launch --multi_gpu --num_processes 8 -m trainer.train ...     # DDP (see launch/)

``train``: check the config -> take the run lock -> ``setup`` (data, teacher targets, objective, optimizer, resume
state) -> ``Training.run``: for each batch ``accumulate`` -> loss parts -> backward -> step (counted only when
gradients sync) -> ``maybe_log`` / ``maybe_eval`` / ``maybe_remine`` / ``maybe_save`` -> at the end ``report``.
Resume states and exported checkpoints are written by ``trainer.checkpointing.Checkpointer``, the best one kept by
``trainer.best_checkpoint``; messages go to the console and ``train.log`` (``RunDir.echo``), and ``summary.md`` and
``plots/`` are written by ``trainer.run_report``.
"""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, send_to_device, set_seed
from omegaconf import DictConfig
from tqdm.auto import tqdm

from trainer.best_checkpoint import BestCheckpoint
from trainer.build import Evaluator, build_data, build_encoder, build_objective, build_optimizer, build_scheduler
from trainer.checkpointing import Checkpointer, TrainState, remined_state, resolve_resume
from trainer.config_checks import check_train_config
from trainer.data.batch import Batch
from trainer.gradcache import cached_step
from trainer.metrics_logger import MetricsLogger
from trainer.planner import make_plan
from trainer.run import RunDir, step_name
from trainer.run_report import Outcome, comparison_table, config_summary, eval_line, progress_line, write_plots, \
    write_summary
from trainer.runlock import RunLock
from trainer.runtime import training_mixed_precision
from trainer.teachers.targets import TeacherCollator, build_teacher_targets

__all__ = ["NonFiniteLoss", "TrainState", "count_steps", "train"]


class NonFiniteLoss(RuntimeError):
    pass


def epoch_steps(sampler: Any, epoch: int, accum: int) -> int:
    """Optimizer steps of ``epoch``: its whole accumulation windows (syncs align with epoch ends)."""
    steps = sampler.num_batches(epoch) // accum
    if steps == 0:
        raise ValueError(f"epoch {epoch} has {sampler.num_batches(epoch)} global batches < "
                         f"train.gradient_accumulation_steps={accum}: lower train.batch_size or the accumulation, "
                         "or deduplicate the data (rows clashing with every open batch are left out)")
    return steps


def count_steps(sampler: Any, accum: int, epochs: int, max_steps: Optional[int]) -> int:
    """The schedule's length: ``max_steps``, or the sum of every epoch's own step count (epochs differ: which
    rows clash depends on the epoch's draws). Built last to first, so epoch 0's batches stay cached."""
    if max_steps is not None:
        epoch_steps(sampler, 0, accum)  # at least one step per epoch, checked before anything trains
        return max_steps
    return sum(epoch_steps(sampler, epoch, accum) for epoch in reversed(range(epochs)))


@dataclass
class Setup:
    """Everything ``Training`` runs with."""
    cfg: DictConfig
    accelerator: Accelerator
    run: RunDir
    loader: Any
    sampler: Any
    objective: Any
    optimizer: Any
    scheduler: Any
    checkpointer: Checkpointer
    logger: MetricsLogger
    evaluator: Optional[Evaluator]
    best: Optional[BestCheckpoint]
    remine: Optional[Any]
    state: TrainState
    total_steps: int
    started: float  # time.perf_counter() when this start began setting up


def train(cfg: DictConfig) -> Optional[float]:
    """Train as configured; returns the main eval metric after training (for sweeps), or None."""
    check_train_config(cfg)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    # cpu=True where no accelerator exists: Accelerate then picks up torchrun's WORLD_SIZE (gloo) instead of
    # silently training one process per rank on the whole data.
    precision = training_mixed_precision(cfg.train.mixed_precision)
    forget_other_precision(precision)
    accelerator = Accelerator(mixed_precision=precision,
                              gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
                              cpu=not torch.accelerator.is_available())
    set_seed(cfg.train.seed)
    run = RunDir(cfg.run_dir, accelerator.is_main_process)
    with RunLock(run.root, enabled=run.is_main):
        with removed_on_failure(run):
            setup = build(cfg, accelerator, run)
        return Training(setup).run()


def forget_other_precision(precision: str) -> None:
    """Accelerate keeps the first ``Accelerator``'s mixed precision for the whole process and refuses another; a
    Hydra multirun trains every trial in one process, so a trial with another precision starts a fresh state (the
    process group, in ``PartialState``, is kept)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


@contextmanager
def removed_on_failure(run: RunDir) -> Iterator[None]:
    """A start that fails before training (bad data, bad config) leaves no run dir behind if it had none. A
    sweep trial's dir stays: its config and ``trial.json`` record the failure for the sweep's summary."""
    from trainer.sweep import in_multirun

    fresh = run.is_main and not run.holds_results() and not in_multirun()
    try:
        yield
    except BaseException:
        if fresh and not run.step_dirs(run.states):
            shutil.rmtree(run.root, ignore_errors=True)
        raise


def open_run(cfg: DictConfig, accelerator: Accelerator, run: RunDir) -> Optional[tuple[Path, dict[str, Any]]]:
    """The state to resume (None: a fresh start); the run dir cleaned of a killed run's temporaries, initialised
    (provenance) unless it continues its own state, and the config summary logged."""
    resume = resolve_resume(cfg, run, accelerator.num_processes, run.echo)
    for stale in run.clean_temporaries():
        run.echo(f"removed {stale}, left by a run killed while writing it")
    if resume is None or resume[0].parent != run.states:
        run.init(cfg, accelerator.num_processes, resume[0] if resume else None)  # provenance of this run dir
    run.echo(config_summary(cfg, run))
    accelerator.wait_for_everyone()
    return resume


def build(cfg: DictConfig, accelerator: Accelerator, run: RunDir) -> Setup:
    """Resume decision, run dir, data, teacher targets, objective, optimizer and the resumed state."""
    started = time.perf_counter()
    log = run.echo  # rank 0: the console and train.log
    resume = open_run(cfg, accelerator, run)
    encoder = build_encoder(cfg.model)
    loader, sampler = build_data(cfg.data, encoder, cfg.train.batch_size, cfg.train.seed,
                                 accelerator.num_processes, accelerator.process_index, log)
    from trainer.mining.remine import build_remine

    remine = build_remine(cfg, getattr(sampler, "dataset", None))  # None unless train.remine_every (ANCE-style)
    # The teacher (if any) runs here, once, over every training text (cached on disk), then is dropped; batches
    # get its embeddings or scores from memory (trainer/teachers/targets.py). Built before the re-mined negatives
    # of a resume state come back: its targets then cover the whole frozen corpus re-mining draws from.
    targets = build_teacher_targets(cfg, loader.dataset.examples, accelerator.device, log,
                                    keep_teacher=remine is not None)
    if targets is not None:
        loader.collate_fn = TeacherCollator(loader.collate_fn, targets, (cfg.get("distill") or {}).get("tasks"))
    if cfg.get("distill") is not None and cfg.distill.get("align", False):
        from trainer.teachers.align import attach_aligned_head

        attach_aligned_head(encoder, targets, loader.dataset.examples, log)  # before the optimizer sees parameters
    if remine is not None:
        remine.rescore = targets.rescore if targets is not None else None
        if resume is not None and (negatives := remined_state(resume[0])) is not None:
            remine.load_state_dict(negatives)
            remine.rescore and remine.rescore(loader.dataset.examples)
    accum = cfg.train.gradient_accumulation_steps
    total_steps = count_steps(sampler, accum, cfg.train.epochs, cfg.train.max_steps)
    objective = build_objective(cfg, encoder, targets.dim if targets is not None else None)
    optimizer = build_optimizer(cfg.optim, objective)
    # The scheduler is stepped by us once per optimizer step (Accelerate's wrapper would step it once per
    # process); its state goes into the resume state's JSON (trainer.checkpointing).
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    unwrapped = accelerator.unwrap_model(objective)
    checkpointer = Checkpointer(cfg, run, accelerator, scheduler, unwrapped.encoder, total_steps,
                                extra_state=(remine.state_dict if remine is not None else lambda: None),
                                on_saved=on_save_evaluation(cfg, run, accelerator))
    best = BestCheckpoint.from_config(cfg, run, checkpointer)
    state = TrainState()
    if resume is not None:
        state = checkpointer.restore(*resume)
        log(f"resumed from {resume[0]} at step {state.step} (epoch {state.epoch}, batch {state.batch_in_epoch})")
        run.truncate_logs(state.step, log=log)
        best and best.replay()
    log(f"training {total_steps} steps, global batch {cfg.train.batch_size * accelerator.num_processes} x {accum} "
        f"accumulation, {cfg.data.num_negatives} hard negatives per query, {accelerator.num_processes} processes, "
        f"mixed precision {accelerator.mixed_precision} (train.mixed_precision={cfg.train.mixed_precision})")
    plan = make_plan(cfg, unwrapped, sampler.dataset.examples, accelerator.num_processes,
                     sampler.dropped_in(state.epoch))
    log(plan.text())  # batches, negatives per query, memory estimate, duplicate warnings (also <run>/plan.json)
    if accelerator.is_main_process:
        plan.write(run.root)
    evaluator = Evaluator(cfg.eval) if cfg.eval.tasks else None
    return Setup(cfg, accelerator, run, loader, sampler, objective, optimizer, scheduler, checkpointer,
                 MetricsLogger(cfg.logger, run, cfg), evaluator, best, remine, state, total_steps, started)


def on_save_evaluation(cfg: DictConfig, run: RunDir, accelerator: Accelerator) -> Optional[Callable[[Path], None]]:
    """``eval.on_save``: rank 0 scores each new checkpoint from disk, as the watcher would (other ranks wait);
    multi-GPU runs should run the watcher beside training instead."""
    if not (cfg.eval.on_save and cfg.eval.tasks):
        return None

    def evaluate(folder: Path) -> None:
        from trainer.evaluation.watcher import evaluate_saved

        evaluate_saved(run.root, folder, list(cfg.eval.tasks), batch_size=cfg.eval.batch_size,
                       device=str(accelerator.device), log=run.echo, precision=cfg.eval.precision)

    return evaluate


class Training:
    """The step loop over a ``Setup``; each ``maybe_*`` acts on the step just finished."""

    def __init__(self, setup: Setup) -> None:
        self.s = setup
        self.cfg, self.accelerator, self.state = setup.cfg, setup.accelerator, setup.state
        self.unwrapped = self.accelerator.unwrap_model(setup.objective)
        self.global_batch = self.cfg.train.batch_size * self.accelerator.num_processes
        self.stop_at = min(setup.total_steps, self.cfg.train.stop_after_steps or setup.total_steps)
        self.window: dict[str, Any] = {"start": time.perf_counter(), "samples": 0, "parts": {}, "count": 0}
        self.evaluated: Optional[tuple[int, dict[str, float]]] = None  # (step, results) of the last evaluation
        self.started, self.first_step, self.first_samples = time.perf_counter(), self.state.step, self.state.samples
        self.setup_started = setup.started
        self.stopped: Optional[str] = None  # why training ends before the schedule (early stopping)

    def run(self) -> Optional[float]:
        s, state = self.s, self.state
        before = self.maybe_eval(force=self.cfg.eval.before_training and state.step == 0)
        progress = tqdm(total=s.total_steps, initial=state.step, desc="train", dynamic_ncols=True,
                        disable=not (self.accelerator.is_main_process and self.cfg.train.progress_bar))
        s.objective.train()
        loop_start = self.started = time.perf_counter()  # the ETA counts from here
        while state.step < self.stop_at:
            self.run_epoch(progress)
        progress.close()
        train_seconds = time.perf_counter() - loop_start
        finished = state.step >= s.total_steps or self.stopped is not None
        s.checkpointer.save(state, final=finished)
        after = self.maybe_eval(force=True)
        s.logger.finish()
        if finished:
            s.run.mark_done({"step": state.step, "final_checkpoint": str(s.run.checkpoints / step_name(state.step)),
                             **(s.best.info() if s.best else {}), "stopped": self.stopped})
        if before and after:
            s.run.echo(comparison_table(before, after))
        metric = s.evaluator.main_metric() if s.evaluator else None
        self.report(train_seconds, s.best.metric if s.best else metric)
        return after.get(metric) if metric else None

    def report(self, train_seconds: float, metric: Optional[str]) -> None:
        """``summary.md`` and ``plots/`` (rank 0), from the run dir's logs: the whole run, across resumes."""
        s, state = self.s, self.state
        final = s.run.checkpoints / step_name(state.step)
        outcome = Outcome(state.step, s.total_steps, state.epoch, state.samples, self.first_step,
                          state.samples - self.first_samples, time.perf_counter() - self.setup_started, train_seconds,
                          final, self.stopped, metric)
        if (summary := write_summary(s.run, outcome)) is not None:
            plots = write_plots(s.run)
            names = ", ".join(str(p.relative_to(s.run.root)) for p in plots or []) or "none"
            missing = " (matplotlib is not installed)" if plots is None else ""
            s.run.echo(f"summary: {summary}; plots: {names}{missing}")

    def run_epoch(self, progress: Any) -> None:
        """From the current position to the end of this epoch's own batches (or the step to stop at)."""
        s, state = self.s, self.state
        s.sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
        batches = epoch_steps(s.sampler, state.epoch, self.cfg.train.gradient_accumulation_steps) \
            * self.cfg.train.gradient_accumulation_steps
        for batch in s.loader:
            parts, grad_norm = self.step(send_to_device(batch, self.accelerator.device))
            state.samples += self.global_batch
            state.batch_in_epoch += 1
            end_of_epoch = state.batch_in_epoch >= batches
            if self.accelerator.sync_gradients:
                state.step += 1
                if end_of_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                progress.update(1)
                progress.set_postfix(loss=f"{parts['loss']:.4f}")
                self.after_step(grad_norm)
                if state.step >= self.stop_at:
                    return
            if end_of_epoch:
                return

    def step(self, batch: Batch) -> tuple[dict[str, float], Optional[float]]:
        """Forward, backward and (when gradients sync) the optimizer step of one micro-batch. Returns the loss
        parts averaged over processes, and the gradient norm before clipping."""
        s, cfg, accelerator = self.s, self.cfg, self.accelerator
        with accelerator.accumulate(s.objective):
            if cfg.train.mini_batch_size:  # GradCache: forward and backward happen inside
                parts = cached_step(accelerator, s.objective, batch, cfg.train.mini_batch_size)
            else:
                parts = s.objective(batch)
            means = self.mean_parts(parts)
            if not cfg.train.mini_batch_size:
                accelerator.backward(parts["loss"])
            grad_norm = None
            if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                grad_norm = float(accelerator.clip_grad_norm_(s.objective.parameters(), cfg.optim.max_grad_norm))
            s.optimizer.step()
            if accelerator.sync_gradients:
                s.scheduler.step()
            s.optimizer.zero_grad()
        for key, value in means.items():
            self.window["parts"][key] = self.window["parts"].get(key, 0.0) + value
        self.window["count"] += 1
        self.window["samples"] += self.global_batch
        return means, grad_norm

    def mean_parts(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each loss part averaged over processes (one all-reduce); a non-finite loss stops the run."""
        names = list(parts)
        means = self.accelerator.reduce(torch.stack([parts[k].detach().float() for k in names]), "mean")
        values = dict(zip(names, means.tolist()))
        if not torch.isfinite(means).all():
            state = self.state
            raise NonFiniteLoss(f"non-finite loss ({values}) at step {state.step + 1} (epoch {state.epoch}, batch "
                                f"{state.batch_in_epoch}): lower optim.lr, check the data, or use "
                                "train.mixed_precision=bf16 instead of fp16")
        return values

    def after_step(self, grad_norm: Optional[float]) -> None:
        self.maybe_log(grad_norm)
        self.maybe_eval()
        if self.stopped:
            self.stop_at = self.state.step  # early stopping: ``run`` saves, evaluates and marks the run done
            return
        self.maybe_remine()  # before the save: the state carries the negatives the next steps train on
        if self.periodic_save():
            self.s.checkpointer.save(self.state)

    def periodic_save(self) -> bool:
        """``train.save_every_n_steps`` saves at this step (the last step is saved by ``run``)."""
        every, step = self.cfg.train.save_every_n_steps, self.state.step
        return bool(every and step % every == 0 and step < self.s.total_steps)

    def maybe_remine(self) -> None:
        """Refresh every example's negatives with the current weights (same result on every rank)."""
        every, step = self.cfg.train.remine_every, self.state.step
        # Not at the last step of the schedule; at a stop_after_steps step yes, as the uninterrupted run would.
        if self.s.remine is not None and step % every == 0 and step < self.s.total_steps:
            record = self.s.remine(self.unwrapped.encoder)
            self.s.logger.log({"step": step, **record})
            self.s.run.echo(f"step {step}: re-mined negatives {record}")

    def maybe_eval(self, force: bool = False) -> dict[str, float]:
        every, step = self.cfg.eval.every_n_steps, self.state.step
        if self.s.evaluator is None or not (force or (every and step > 0 and step % every == 0)):
            return {}
        if self.evaluated is not None and self.evaluated[0] == step:
            return self.evaluated[1]  # the final step, evaluated already by eval.every_n_steps
        results: dict[str, float] = {}
        stop: list[Optional[str]] = [None]
        if self.accelerator.is_main_process:
            started = time.perf_counter()
            results = self.s.evaluator(self.unwrapped.encoder)
            seconds = time.perf_counter() - started
            self.s.logger.log({"step": step, **results, "eval_seconds": seconds}, "eval.jsonl")
            self.s.run.echo(eval_line(step, results, seconds))
            if self.s.best is not None and step > 0:
                saving = self.periodic_save() or step >= self.stop_at  # this step's save writes its checkpoint
                stop[0] = self.s.best.update(step, results, saved_at_this_step=saving)
        self.accelerator.wait_for_everyone()
        if self.s.best is not None and self.accelerator.num_processes > 1:
            broadcast_object_list(stop)  # rank 0's decision, on every rank
        if stop[0] and not self.stopped:
            self.stopped = stop[0]
            self.s.run.echo(f"step {step}: {self.stopped}")
        self.evaluated = (step, results)
        return results

    def maybe_log(self, grad_norm: Optional[float]) -> None:
        state, window = self.state, self.window
        if state.step % self.cfg.logger.every_n_steps and state.step != self.s.total_steps:
            return
        elapsed = time.perf_counter() - window["start"]
        record = {"step": state.step, "epoch": state.epoch, "samples": state.samples,
                  **{k: v / window["count"] for k, v in window["parts"].items()},
                  "lr": self.s.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                  "temperature": self.unwrapped.contrastive.temperature,
                  "samples_per_s": window["samples"] / max(elapsed, 1e-9)}
        self.s.logger.log(record)
        done = state.step - self.first_step
        eta = (self.stop_at - state.step) * (time.perf_counter() - self.started) / done if done > 0 else None
        # With the progress bar on screen the line goes to train.log only: the bar shows the same numbers.
        self.s.run.echo(progress_line(record, self.s.total_steps, eta), console=not self.cfg.train.progress_bar)
        window.update(start=time.perf_counter(), samples=0, parts={}, count=0)
