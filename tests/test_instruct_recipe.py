"""experiment=distill_instruct: six tasks with instruction paraphrases, label tasks symmetric, sized for 2 CPU cores;
and the whole loop on tiny models with label rows, paraphrases, symmetric tasks and a teacher.

    pytest tests/test_instruct_recipe.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import build_tiny_model, write_jsonl

LABEL_TASKS = ["news-outlet", "movie-sentiment", "movie", "tweet-account"]


def compose_real(*overrides: str, config_name: str = "train") -> Any:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def test_recipe_has_six_tasks_with_paraphrases_and_fits_45_minutes() -> None:
    cfg = compose_real("experiment=distill_instruct")
    files = [Path(f).parent.name + "/" + Path(f).stem for f in cfg.data.train_files]
    assert files == ["news/train", "wordnet/train"] + [f"instruct/{t}" for t in LABEL_TASKS]
    instructions = cfg.model.instructions
    assert sorted(instructions) == sorted(["news", "wordnet", *LABEL_TASKS])
    assert all(2 <= len(texts) <= 3 and len(set(texts)) == len(texts) for texts in instructions.values())
    assert list(cfg.model.symmetric_tasks) == LABEL_TASKS  # the label tasks pair texts of one kind
    assert cfg.data.task_homogeneous and cfg.model.instruction_template and cfg.model.exclude_prompt_from_pooling
    assert cfg.teacher is not None and cfg.distill.listwise_kl.weight > 0
    assert list(cfg.distill.tasks) == ["news", "wordnet"]  # the instruction-free teacher stays off label tasks
    # Size: >= 15 steps/min over the task mix (the 2-epoch recipe's 472 steps took 19.6 min at 1 thread beside
    # another training run: 24/min), after at most 10 min of teacher caching: within 45 minutes.
    steps = sum(cfg.data.source_rows) * cfg.train.epochs // cfg.train.batch_size
    assert steps / 15 + 10 <= 45, steps
    # Every suite task that names a training task names one this recipe has an instruction for.
    suite = compose_real("eval=suite", config_name="evaluate")
    named = {t.task for t in suite.eval.tasks if t.task}
    assert named and named <= set(instructions)


def label_rows(task: str, labels: int, per_label: int, start: int) -> list[dict[str, Any]]:
    """Rows of a label task: each text's positives are other texts of its label (as data/prepare_text.py does)."""
    texts = {lab: [f"w{start + lab * 20 + i} w{start + lab * 20 + i + 1} w{start + 300}" for i in range(per_label)]
             for lab in range(labels)}
    return [{"query": t, "pos": [o for o in group if o != t][:3], "task": task, "label": f"L{lab}"}
            for lab, group in texts.items() for t in group]


def test_recipe_trains_on_tiny_models(compose, tmp_path: Path) -> None:
    from trainer.loop import train
    from trainer.models import Encoder

    files = [write_jsonl(tmp_path / "sentiment.jsonl", label_rows("movie-sentiment", 2, 12, 0)),
             write_jsonl(tmp_path / "movie.jsonl", label_rows("movie", 6, 4, 100)),
             write_jsonl(tmp_path / "news.jsonl", [{"query": f"w{400 + i} w{401 + i}", "pos": [f"w{500 + i} w{600 + i}"],
                                                    "task": "news"} for i in range(24)])]
    teacher = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    cfg = compose("experiment=distill_instruct", f"teacher.name_or_path={teacher}",
                  f"data.train_files=[{','.join(str(f) for f in files)}]", "data.max_rows_per_file=16", "data.source_rows=null",
                  "train.max_steps=4", "train.save_every_n_steps=4", "logger.every_n_steps=1",
                  "eval.before_training=false", "model.max_length_query=24")
    train(cfg)
    run = Path(cfg.run_dir)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"contrastive", "kl", "loss"} <= set(logged[0]) and len(logged) == 4
    checkpoint = next((run / "checkpoints").iterdir())
    prompts = Encoder.from_pretrained(str(checkpoint)).spec.prompts
    assert prompts.instructions["movie"] == cfg.model.instructions.movie[0]  # the first, for evaluation
    assert prompts.instruction_paraphrases["movie"] == list(cfg.model.instructions.movie)
    assert prompts.symmetric_tasks == LABEL_TASKS
    assert "## Instructions" in (checkpoint / "README.md").read_text()
