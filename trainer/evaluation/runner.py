"""Evaluate one exported checkpoint on the configured tasks, encoding exactly as it was trained.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/step-000100 eval=suite

The checkpoint's ``embedstill.json`` decides prompts, pooling, normalisation and max lengths. A task that
configures a different prompt is refused (``PromptMismatch``) unless it sets ``allow_prompt_override: true``.
Each task writes one JSON in the MTEB results layout to ``<out_dir>/<task>.json`` (a failed task records its
error there and the next task runs); ``model_meta.json`` describes the checkpoint. Embeddings are cached in
``<out_dir>/cache/`` (``trainer.encoding.encode_cached``), so scoring a task again does not encode again.
"""
from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainer.distributed import world
from trainer.encoding import encode_cached
from trainer.evaluation.kinds import load_task, main_score_name, score_task
from trainer.evaluation.tasks import SUITE_FILE, check_task_names, fingerprint, task_fingerprint
from trainer.models.encoder import METADATA_FILE, Encoder, load_metadata
from trainer.runtime import pick_device  # noqa: F401 (re-exported)
from trainer.run import STEP_DIR, write_json_atomic

Log = Callable[[str], None]


class PromptMismatch(ValueError):
    """A task asks for prompts the checkpoint was not trained with."""


def load_checkpoint(path: str | Path, device: str = "auto", allow_no_metadata: bool = False,
                    ) -> tuple[Encoder, dict[str, Any]]:
    """The encoder as its ``embedstill.json`` describes it (spec=None reads it), on ``device``, in eval mode."""
    path = Path(path)
    meta = load_metadata(path)
    if meta is None and not allow_no_metadata:
        raise FileNotFoundError(f"{path}: no {METADATA_FILE}, so the prompts, pooling, normalisation and max lengths "
                                "it was trained with are unknown; pass allow_no_metadata=true to use the defaults "
                                "(mean pooling, normalised, no prompts)")
    meta = meta or {}
    encoder = Encoder.from_pretrained(str(path))
    encoder.to(pick_device(device)).eval()
    return encoder, meta


def task_prompts(encoder: Encoder, task: Mapping[str, Any], source: str = "") -> tuple[Encoder, Optional[str]]:
    """The encoder to use for ``task`` and the query instruction to pass per text (None = the spec's own).

    Raises ``PromptMismatch`` when the task sets a prompt that differs from the checkpoint's, or names a
    training ``task`` the checkpoint has no instruction for, unless ``allow_prompt_override`` is set.
    """
    prompts = encoder.spec.prompts
    have = {"query_prefix": prompts.query_prefix, "passage_prefix": prompts.passage_prefix,
            "instruction": prompts.instruction_for(task.get("task"))}
    diffs = {k: (have[k], task.get(k)) for k in have if task.get(k) is not None and task.get(k) != have[k]}
    problems = [f"{k}={want!r} (checkpoint: {got!r})" for k, (got, want) in diffs.items()]
    if "instruction" in diffs and not prompts.instruction_template:
        problems.append("the checkpoint has no instruction_template, so an instruction would be ignored")
    if (task.get("task") and prompts.instructions and prompts.instruction_template
            and have["instruction"] is None and task.get("instruction") is None):
        problems.append(f"task={task['task']!r} has no instruction in the checkpoint "
                        f"(it knows {sorted(prompts.instructions)})")
    if problems and not task.get("allow_prompt_override"):
        raise PromptMismatch(f"eval task {task['name']!r} asks for prompts that checkpoint {source or encoder.source} "
                             f"was not trained with: {'; '.join(problems)}. Its {METADATA_FILE} decides the prompts: "
                             "remove these keys from the task, or set allow_prompt_override=true to evaluate "
                             "with the task's prompts anyway.")
    if not diffs:
        return encoder, None

    def pick(key: str, current: str) -> str:
        return current if task.get(key) is None else task[key]

    new_prompts = dataclasses.replace(prompts, query_prefix=pick("query_prefix", prompts.query_prefix),
                                      passage_prefix=pick("passage_prefix", prompts.passage_prefix))
    spec = dataclasses.replace(encoder.spec, prompts=new_prompts)
    return Encoder(encoder.backbone, encoder.tokenizer, spec, source=encoder.source, dense=encoder.dense), task.get("instruction")


class Embedder:
    """``(texts, side) -> (N, D)`` for one task: cached, no grad, bf16 on CUDA (``encode_cached`` decides)."""

    def __init__(self, encoder: Encoder, task: Optional[str], instruction: Optional[str],
                 cache_root: Optional[Path], batch_size: int, precision: str = "auto") -> None:
        self.encoder, self.task, self.instruction = encoder, task, instruction
        self.cache_root, self.batch_size, self.precision = cache_root, batch_size, precision

    def __call__(self, texts: Sequence[str], side: str) -> np.ndarray:
        instructions = [self.instruction] * len(texts) if self.instruction and side == "query" else None
        with torch.inference_mode():
            return encode_cached(self.encoder, list(texts), side, cache_root=self.cache_root,
                                 task=self.task if side == "query" else None, batch_size=self.batch_size,
                                 instructions=instructions, precision=self.precision)


class AsymmetricEmbedder:
    """Queries by one checkpoint, passages by another: a student serving queries against a corpus indexed once by
    its teacher (both must embed into one space, e.g. a student trained with ``distill.align=true``)."""

    def __init__(self, queries: Embedder, corpus: Embedder) -> None:
        self.queries, self.corpus = queries, corpus

    def __call__(self, texts: Sequence[str], side: str) -> np.ndarray:
        return (self.corpus if side == "passage" else self.queries)(texts, side)


def load_corpus_encoder(path: str | Path, like: Encoder, device: str = "auto") -> Encoder:
    """The corpus side's encoder; a folder without ``embedstill.json`` (a plain teacher) reads passages as ``like``
    does (pooling, normalisation, passage length) without prompts. Its dimension must be ``like``'s."""
    path = Path(path)
    spec = None
    if load_metadata(path) is None:
        spec = dataclasses.replace(like.spec, prompts=dataclasses.replace(like.spec.prompts, query_prefix="",
                                                                          passage_prefix=""))
    encoder = Encoder.from_pretrained(str(path), spec)
    if encoder.dim != like.dim:
        raise ValueError(f"corpus_checkpoint={path} embeds into {encoder.dim} dimensions, the checkpoint into "
                         f"{like.dim}: asymmetric retrieval needs one space (train the student with "
                         "distill.align=true against this teacher)")
    return encoder.to(pick_device(device)).eval()


def as_dict(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task config (``DictConfig`` from Hydra, or a plain mapping) as a resolved plain dict."""
    if isinstance(task, DictConfig):
        return dict(OmegaConf.to_container(task, resolve=True))  # type: ignore[arg-type]
    return dict(task)


def checkpoint_step(path: Path, meta: Mapping[str, Any]) -> Optional[int]:
    if isinstance(meta.get("step"), int):
        return meta["step"]
    match = STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def model_info(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": path.name, "checkpoint": str(path), "run": meta.get("run"), "step": checkpoint_step(path, meta),
            "revision": meta.get("config_hash"), "base_model": meta.get("base_model"), "dim": meta.get("dim"),
            "architecture": meta.get("architecture"), "final": meta.get("final"), "encoder": meta.get("encoder"),
            "has_metadata": bool(meta)}


def result_record(task: Mapping[str, Any], model: dict[str, Any], scores: Optional[dict[str, float]],
                  seconds: float, error: Optional[str], prompts: dict[str, Any], retry: bool = True) -> dict[str, Any]:
    """One task's result in the MTEB results layout, plus our own block under ``embedstill`` (``retry``: whether a
    failure may pass on a later run with the same task and data; a task that could not read them will not)."""
    main = main_score_name(task)
    split_scores = [] if scores is None else [{"hf_subset": "default", "languages": ["eng-Latn"],
                                               "main_score": scores[main], **scores}]
    try:
        revision: Optional[str] = fingerprint(task["path"])
    except OSError:
        revision = None
    return {"dataset_revision": revision, "task_name": task["name"], "mteb_version": None,
            "scores": {task.get("split", "test"): split_scores}, "evaluation_time": seconds,
            "kg_co2_emissions": None,
            "embedstill": {"status": "ok" if error is None else "failed", "error": error, "retry": retry,
                           "task_fingerprint": task_fingerprint(task), "kind": task["kind"],
                           "main_score_name": main, "path": str(task["path"]), "prompts": prompts, "model": model}}


def result_file(out_dir: Path, task_name: str) -> Path:
    """``<out_dir>/<task>.json``: task names are plain file names (``check_task_names``), one file each."""
    return Path(out_dir) / f"{task_name}.json"


def evaluate_checkpoint(checkpoint: str | Path, tasks: Sequence[Mapping[str, Any]], out_dir: str | Path, *,
                        batch_size: int = 64, device: str = "auto", allow_no_metadata: bool = False,
                        log: Log = print, corpus_checkpoint: Optional[str | Path] = None,
                        precision: str = "auto", cache_dir: Optional[str | Path] = None) -> dict[str, dict[str, Any]]:
    """Evaluate every task; returns ``{task name: result record}`` and (rank 0) writes them under ``out_dir``.

    ``corpus_checkpoint``: asymmetric retrieval -- queries by ``checkpoint``, documents by this one; only retrieval
    tasks are scored (the others have no query/document sides). ``precision``: ``trainer.encoding.autocast_dtype``
    (default ``auto``: exact float32 on CPU, so scores compare across machines; ``fast`` for bf16 where native).
    ``cache_dir``: the embedding cache (default ``<out_dir>/cache``; keyed by model, so models may share one).

    Bad task names, loading errors (a checkpoint deleted while read included) and ``PromptMismatch`` propagate;
    any other error inside a task is recorded in that task's JSON and the next task runs.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    tasks = [as_dict(t) for t in tasks]
    check_task_names(tasks)
    is_main = world()[0] == 0
    encoder, meta = load_checkpoint(checkpoint, device, allow_no_metadata)
    corpus = None
    if corpus_checkpoint is not None:
        corpus = load_corpus_encoder(corpus_checkpoint, encoder, device)
        skipped = [t["name"] for t in tasks if t["kind"] != "retrieval"]
        if skipped:
            log(f"[eval] corpus_checkpoint: scoring retrieval tasks only (skipped: {', '.join(skipped)})")
        tasks = [t for t in tasks if t["kind"] == "retrieval"]
    plans = [(task, *task_prompts(encoder, task, str(checkpoint))) for task in tasks]  # refuse before any work
    model = model_info(checkpoint, meta)
    if corpus_checkpoint is not None:
        model["corpus_checkpoint"] = Path(corpus_checkpoint).name
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / "model_meta.json", model)
    results: dict[str, dict[str, Any]] = {}
    for task, task_encoder, instruction in plans:
        started = time.perf_counter()
        spec_prompts = task_encoder.spec.prompts
        prompts = {"query_prefix": spec_prompts.query_prefix, "passage_prefix": spec_prompts.passage_prefix,
                   "instruction": instruction or spec_prompts.instruction_for(task.get("task")),
                   "side": task.get("side", "query"), "override": task_encoder is not encoder}
        cache = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
        embed: Callable[[Sequence[str], str], np.ndarray] = Embedder(task_encoder, task.get("task"), instruction,
                                                                     cache, batch_size, precision)
        if corpus is not None:
            embed = AsymmetricEmbedder(embed, Embedder(corpus, None, None, cache, batch_size, precision))
        scores, error, retry = run_task(task, embed, log, f"{checkpoint.name} {task['name']}")
        record = result_record(task, model, scores, time.perf_counter() - started, error, prompts, retry)
        results[task["name"]] = record
        if is_main:
            write_json_atomic(result_file(out_dir, task["name"]), record)
        if scores is not None:
            log(f"[eval] {checkpoint.name} {task['name']}: {main_score_name(task)}={scores[main_score_name(task)]:.4f} "
                f"({record['evaluation_time']:.1f}s)")
    return results


def suite_average(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """MTEB-style averages of main scores: ``suite/average`` over tasks, ``suite/kind/<kind>`` per kind,
    ``suite/tasks`` how many tasks count. Only when every task succeeded (a mean over fewer tasks would not be
    comparable with another checkpoint's); empty otherwise."""
    by_kind: dict[str, list[float]] = {}
    for record in results.values():
        info = record["embedstill"]
        splits = [s for s in record["scores"].values() if s]
        if info.get("status") != "ok" or not splits:
            return {}
        by_kind.setdefault(info["kind"], []).append(float(splits[0][0]["main_score"]))
    values = [v for kind in by_kind.values() for v in kind]
    if not values:
        return {}
    out = {"suite/average": float(np.mean(values)), "suite/tasks": float(len(values))}
    out.update({f"suite/kind/{kind}": float(np.mean(v)) for kind, v in sorted(by_kind.items())})
    return out


def run_task(task: Mapping[str, Any], embed: Embedder, log: Log, where: str,
             ) -> tuple[Optional[dict[str, float]], Optional[str], bool]:
    """(scores, error, retry) of one task; a failure is logged as ``[eval] <where>: FAILED ...``.

    An error reading the task's data or settings recurs until they change (retry False); one while encoding or
    scoring may not (retry True).
    """
    stage = "data"
    try:
        data = load_task(task)
        stage = "score"
        scores = score_task(task, data, embed)
        stage = "settings"
        if main_score_name(task) not in scores:
            raise KeyError(f"main_score {main_score_name(task)!r} is not a {task['kind']} score "
                           f"(one of {sorted(scores)})")
    except Exception as err:  # noqa: BLE001 - a failed task is recorded and the next one runs
        error = f"{type(err).__name__}: {err}"
        log(f"[eval] {where}: FAILED {error}\n{traceback.format_exc(limit=3)}")
        return None, error, stage == "score"
    return scores, None, True


def main_scores(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"<task>/<main score name>": value}`` of the tasks that succeeded."""
    out = {}
    for name, record in results.items():
        for split_scores in record["scores"].values():
            if split_scores:
                out[f"{name}/{record['embedstill']['main_score_name']}"] = float(split_scores[0]["main_score"])
    return out


def all_scores(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"<task>/<score>": value}`` for every numeric score of the tasks that succeeded."""
    out = {}
    for name, record in results.items():
        for split_scores in record["scores"].values():
            for row in split_scores:
                out.update({f"{name}/{k}": float(v) for k, v in row.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def write_suite_average(out_dir: str | Path, tasks: Sequence[Mapping[str, Any]], log: Log = print,
                        ) -> dict[str, float]:
    """Average the result files of ``tasks`` in ``out_dir`` (results of earlier calls included, so a watcher
    that scored only the missing tasks still averages all of them) into ``out_dir/suite_average.json``; a stale
    file is removed when some task has no successful result."""
    out_dir = Path(out_dir)
    results: dict[str, Any] = {}
    for task in tasks:
        try:
            results[task["name"]] = json.loads(result_file(out_dir, task["name"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = {}
            break
    average = suite_average(results)
    target = out_dir / SUITE_FILE
    if not average:
        target.unlink(missing_ok=True)
        return average
    write_json_atomic(target, average)
    log(f"[eval] {out_dir.name}: suite average {average['suite/average']:.4f} over {average['suite/tasks']:.0f} "
        "tasks; " + ", ".join(f"{k.rsplit('/', 1)[1]} {v:.4f}" for k, v in average.items()
                              if k.startswith("suite/kind/")))
    return average
