"""The watcher over a run that writes checkpoints while it watches: partial folders ignored, a checkpoint
deleted mid-read survived, a failed task recorded, nothing evaluated twice, stop and restart; eval.on_save.

    pytest -q tests/test_watcher.py
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import make_rows, write_beir, write_jsonl


pytestmark = pytest.mark.usefixtures("one_thread")

def _save(tiny_model: Path, target: Path, step: int) -> Path:
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import Encoder, EncoderSpec
    from trainer.models.prompts import PromptSpec

    spec = EncoderSpec(max_length_query=16, max_length_passage=32, prompts=PromptSpec(query_prefix="query: "))
    return save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), target, {"step": step, "final": False})


@pytest.fixture
def tasks(tmp_path: Path) -> list[dict[str, Any]]:
    beir = write_beir(tmp_path / "beir", make_rows(10, seed=5))
    sts = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": f"w{i} w{i + 1}", "sentence2": f"w{i} w{i + 2}",
                                                 "score": i % 4} for i in range(8)])
    return [{"name": "ret", "kind": "retrieval", "path": str(beir), "split": "test"},
            {"name": "sts", "kind": "sts", "path": str(sts)},
            {"name": "broken", "kind": "clustering", "path": str(tmp_path / "missing.jsonl")}]


def test_watcher_follows_a_run(tiny_model: Path, tasks: list[dict[str, Any]], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.evaluation import runner
    from trainer.evaluation.watcher import EvalState, watch_run

    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    loads: list[str] = []
    real_load = runner.Encoder.from_pretrained

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name.startswith("step-"):  # not the writer thread's own loads of the base model
            loads.append(Path(path).name)
        if Path(path).name == "step-000020":
            shutil.rmtree(path)  # rotated away while the watcher reads it
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(runner.Encoder, "from_pretrained", staticmethod(load))

    # Before the watcher starts: one complete checkpoint and a partial one that never completes.
    _save(tiny_model, ckpts / "step-000010", 10)
    partial = ckpts / ".tmp-step-000050-abc"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    # A first, non-watching pass evaluates what is there, then stops (a watcher stopped early).
    first = watch_run(run, tasks, watch=False, device="cpu", log=lambda _: None)
    assert list(first) == ["step-000010"]

    def trainer_thread() -> None:  # writes checkpoints while the watcher runs, then the final marker
        for step in (20, 30, 40):
            time.sleep(0.2)
            _save(tiny_model, ckpts / f"step-{step:06d}", step)
        time.sleep(0.2)
        (run / "DONE.json").write_text(json.dumps({"step": 40}))

    writer = threading.Thread(target=trainer_thread)
    writer.start()
    started = time.monotonic()
    second = watch_run(run, tasks, watch=True, poll_seconds=0.05, idle_timeout_seconds=30, device="cpu",
                       log=lambda _: None)
    writer.join()
    assert time.monotonic() - started < 25, "the watcher should stop at DONE.json, not at the idle timeout"
    assert sorted(second) == ["step-000030", "step-000040"]
    assert sorted(loads) == ["step-000010", "step-000020", "step-000030", "step-000040"]  # each read once

    state = EvalState(run / "eval").data["checkpoints"]
    assert {k: v["status"] for k, v in state.items()} == {"step-000010": "done", "step-000020": "vanished",
                                                           "step-000030": "done", "step-000040": "done"}
    assert state["step-000040"]["failed_tasks"] == ["broken"]
    assert not any(".tmp" in name for name in state)
    for name in ("step-000010", "step-000030", "step-000040"):
        record = json.loads((run / "eval" / name / "ret.json").read_text())
        assert record["embedstill"]["status"] == "ok"
        assert json.loads((run / "eval" / name / "broken.json").read_text())["embedstill"]["status"] == "failed"
    board = (run / "eval" / "leaderboard.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in board[1:]] == ["10", "30", "40"]
    assert (run / "eval" / "plots" / "sts.png").exists()
    assert not (run / "eval" / "watcher.lock").exists()

    # Restarted: nothing new is evaluated; a checkpoint that lands later is evaluated, once.
    loads.clear()
    assert watch_run(run, tasks, watch=True, poll_seconds=0.05, device="cpu", log=lambda _: None) == {}
    _save(tiny_model, ckpts / "step-000050", 50)
    assert list(watch_run(run, tasks, watch=False, device="cpu", log=lambda _: None)) == ["step-000050"]
    assert loads == ["step-000050"]


def test_watcher_idle_timeout_and_prompt_mismatch(tiny_model: Path, tasks: list[dict[str, Any]],
                                                  tmp_path: Path) -> None:
    from trainer.evaluation.runner import PromptMismatch
    from trainer.evaluation.watcher import watch_run

    run = tmp_path / "run"
    _save(tiny_model, run / "checkpoints" / "step-000001", 1)
    messages: list[str] = []
    started = time.monotonic()
    done = watch_run(run, tasks[:1], watch=True, poll_seconds=0.05, idle_timeout_seconds=0.3, device="cpu",
                     log=messages.append)
    assert list(done) == ["step-000001"] and time.monotonic() - started < 10
    assert "no new checkpoint" in messages[-1]
    _save(tiny_model, run / "checkpoints" / "step-000002", 2)
    with pytest.raises(PromptMismatch):  # a config error stops the watcher instead of being recorded
        watch_run(run, [{**tasks[0], "passage_prefix": "doc: "}], watch=False, device="cpu", log=lambda _: None)
    assert "step-000002" not in json.loads((run / "eval" / "state.json").read_text())["checkpoints"]


def test_training_evaluates_on_save(compose: Any, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from trainer.loop import train

    sts = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": f"w{i} w{i + 1}", "sentence2": f"w{i} w{i + 3}",
                                                 "score": i % 3} for i in range(8)])
    tasks = f"eval.tasks=[{{name: tiny, path: '{tiny_data['beir']}'}}, {{name: sts, kind: sts, path: '{sts}'}}]"
    cfg = compose("train.max_steps=2", "train.save_every_n_steps=1", "eval.on_save=true", "eval.before_training=false",
                  "train.keep_last=1", tasks)
    metric = train(cfg)
    run = Path(cfg.run_dir)
    after = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()][-1]
    assert {"tiny/ndcg_at_10", "sts/cosine_spearman"} <= set(after)  # the training-time evaluator: every kind
    assert metric == after["tiny/ndcg_at_10"]
    state = json.loads((run / "eval" / "state.json").read_text())["checkpoints"]
    assert sorted(state) == ["step-000001", "step-000002"] and all(v["status"] == "done" for v in state.values())
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000002"]  # rotation after evaluation
    record = json.loads((run / "eval" / "step-000001" / "tiny.json").read_text())
    assert record["embedstill"]["model"]["step"] == 1 and record["scores"]["test"][0]["main_score"] >= 0
