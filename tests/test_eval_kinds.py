"""One evaluation path: the task-kind registry, the kind's own main score everywhere, in-loop == CLI scores."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import write_jsonl
from test_evaluation import e5_checkpoint, tiny_tasks  # noqa: F401 (a fixture)
from trainer.config import EvalTaskConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def sts_task(root: Path) -> dict[str, Any]:
    """The README's example: ``{name: mine, kind: sts, path: ...}`` with the schema's default main_score."""
    rows = [{"sentence1": f"w{i} w{i + 1} w{i + 2}", "sentence2": f"w{i} w{i + 1} w{i + 7}", "score": i % 5}
            for i in range(12)]
    task = OmegaConf.structured(EvalTaskConfig(name="mine", kind="sts", path=str(write_jsonl(root / "mine.jsonl",
                                                                                             rows))))
    return OmegaConf.to_container(task)  # type: ignore[return-value]


def eval_cfg(tasks: list[dict[str, Any]], **extra: Any) -> Any:
    return OmegaConf.create({"tasks": [OmegaConf.structured(EvalTaskConfig(**t)) for t in tasks], "batch_size": 64,
                             "metric": None, "matryoshka_dims": None, **extra})


def test_in_loop_and_cli_scores_of_one_checkpoint_are_equal(e5_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    from trainer.build import Evaluator
    from trainer.evaluation.runner import all_scores, evaluate_checkpoint
    from trainer.models.encoder import Encoder

    tasks = [t for t in tiny_tasks(tmp_path) if t["name"] != "broken"] + [sts_task(tmp_path)]
    cli = all_scores(evaluate_checkpoint(e5_checkpoint, tasks, tmp_path / "out", device="cpu", log=lambda _: None))
    in_loop = Evaluator(eval_cfg(tasks))(Encoder.from_pretrained(str(e5_checkpoint)))
    cli = {k: v for k, v in cli.items() if not k.endswith("/main_score")}  # the results file's copy of the main
    assert len(cli) > len(tasks) and set(cli) == set(in_loop), (sorted(cli), sorted(in_loop))
    for key, value in cli.items():
        assert in_loop[key] == pytest.approx(value, abs=1e-6), key
    assert "mine/cosine_spearman" in cli  # the default main_score means the kind's own


def test_in_loop_and_cli_follow_one_precision_rule(e5_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    # On CUDA the rule's auto is bf16: the loop must score as the CLI and the watcher do, not always in float32.
    # bfloat16 named outright applies on this CPU too, so the equality is checked here.
    from trainer.build import Evaluator
    from trainer.evaluation.runner import all_scores, evaluate_checkpoint
    from trainer.models.encoder import Encoder

    tasks = [sts_task(tmp_path)]
    encoder = Encoder.from_pretrained(str(e5_checkpoint))
    runs = {}
    for precision in ("float32", "bfloat16"):
        cli = all_scores(evaluate_checkpoint(e5_checkpoint, tasks, tmp_path / precision, device="cpu",
                                             precision=precision, log=lambda _: None))
        in_loop = Evaluator(eval_cfg(tasks, precision=precision))(encoder)
        assert in_loop == pytest.approx({k: v for k, v in cli.items() if not k.endswith("/main_score")}, abs=1e-6)
        runs[precision] = in_loop
    assert runs["float32"] != pytest.approx(runs["bfloat16"], abs=1e-6)  # the two precisions are told apart


def test_readme_sts_task_names_its_kinds_main_score_in_training_and_sweeps(tmp_path: Path) -> None:
    from trainer.build import Evaluator
    from trainer.sweep import main_metric_name

    task = sts_task(tmp_path)
    cfg = OmegaConf.create({"eval": eval_cfg([task])})
    assert main_metric_name(cfg) == "mine/cosine_spearman"  # the sweep's objective name
    assert Evaluator(cfg.eval).main_metric() == "mine/cosine_spearman"  # what train() returns


def test_export_int8_check_scores_an_sts_task(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.exporting.job import int8_quality
    from trainer.models.encoder import Encoder

    encoder = Encoder.from_pretrained(str(tiny_model))
    cfg = OmegaConf.create({"eval": eval_cfg([sts_task(tmp_path)])})
    quality = int8_quality(cfg, encoder, encoder, encoder)  # anything with Encoder.encode's signature
    (key, scores), = quality.items()
    assert key == "mine/cosine_spearman"
    assert scores["torch"] == scores["onnx_fp32"] == scores["onnx_int8"] and scores["int8_change"] == 0.0
    assert np.isfinite(scores["torch"])


def test_domain_report_reads_an_sts_tasks_main_score(tmp_path: Path) -> None:
    from trainer.domain.job import finish

    run = tmp_path / "run"
    (run / "domain_data").mkdir(parents=True)
    (run / "domain_data" / "mine_report.json").write_text("{}")
    (run / "DONE.json").write_text(json.dumps({"final_checkpoint": str(run / "checkpoints" / "step-000002")}))
    evals = [{"step": 0, "in-domain/ndcg_at_10": 0.25, "mine/cosine_spearman": 0.5},
             {"step": 2, "in-domain/ndcg_at_10": 0.5, "mine/cosine_spearman": 0.75}]
    (run / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    in_domain = {"name": "in-domain", "kind": "retrieval", "path": str(tmp_path)}
    cfg = OmegaConf.create({"run_dir": str(run), "eval": eval_cfg([in_domain, sts_task(tmp_path)]),
                            "domain": {"merge": {"enabled": False}}})
    assert finish(cfg, {}) == 0.5
    report = json.loads((run / "domain_report.json").read_text())
    assert report["test"]["adapted"] == {"in-domain/ndcg_at_10": 0.5, "mine/cosine_spearman": 0.75}


def test_a_new_kind_is_one_registration(tmp_path: Path) -> None:
    """A toy kind registered from outside the package: loaded, scored and named like the built-in ones."""
    from trainer.evaluation import kinds
    from trainer.evaluation.kinds import TaskKind, kind_names, load_task, main_score_name, register, score_task

    def load(cfg: Any) -> list[str]:
        return Path(cfg["path"]).read_text().split()

    def score(task: Any, data: Any, embed: Any) -> dict[str, float]:
        emb = embed(data, task.get("side", "query"))  # (n, D)
        return {"mean_norm": float(np.linalg.norm(emb, axis=1).mean())}

    (tmp_path / "words.txt").write_text("alpha beta gamma")
    register(TaskKind("toy_norm", "mean_norm", load, score))
    try:
        task = {"name": "toy", "kind": "toy_norm", "path": str(tmp_path / "words.txt")}
        assert "toy_norm" in kind_names() and main_score_name(task) == "mean_norm"
        scores = score_task(task, load_task(task), lambda texts, side: np.ones((len(texts), 4), np.float32))
        assert scores == {"mean_norm": 2.0}
        with pytest.raises(ValueError, match=r"eval task x: kind must be one of .*'toy_norm'.*got 'nope'"):
            load_task({"name": "x", "kind": "nope", "path": "p"})
    finally:
        kinds._KINDS.pop("toy_norm")


def test_watcher_scores_the_readme_sts_task_of_every_checkpoint(e5_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs
    from trainer.evaluation.watcher import run_from_config

    task = sts_task(tmp_path)
    run_dir = e5_checkpoint.parent.parent
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"run_dir={run_dir}", f"eval.tasks=[{{name: mine, kind: sts, path: '{task['path']}'}}]", "device=cpu"])
    value = run_from_config(cfg, log=lambda _: None)
    record = json.loads((run_dir / "eval" / e5_checkpoint.name / "mine.json").read_text())
    assert record["embedstill"]["main_score_name"] == "cosine_spearman"
    (rows,) = record["scores"].values()
    assert value == rows[0]["main_score"] == rows[0]["cosine_spearman"]


def test_training_evaluates_the_readme_sts_task_appended_to_eval_tasks(compose: Any, tiny_data: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    from trainer.loop import train

    task = sts_task(tmp_path)
    cfg = compose(f"eval.tasks=[{{name: tiny, path: '{tiny_data['beir']}', kind: retrieval}}, "
                  f"{{name: mine, kind: sts, path: '{task['path']}'}}]", "train.max_steps=2", "eval.metric=null")
    value = train(cfg)
    evals = [json.loads(line) for line in (Path(cfg.run_dir) / "eval.jsonl").read_text().splitlines()]
    assert evals and "mine/cosine_spearman" in evals[-1] and "tiny/ndcg_at_10" in evals[-1]
    assert value == evals[-1]["tiny/ndcg_at_10"]  # the first task's main score is what train() returns
