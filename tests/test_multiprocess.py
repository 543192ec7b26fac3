"""Two processes on CPU (torchrun, gloo): train with GradCache, save, stop, resume=auto, finish.

    pytest tests/test_multiprocess.py

(``accelerate launch --cpu --num_processes 2`` silently starts one process; torchrun, or ``accelerate launch
--multi_gpu --num_processes 2``, starts two.)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_resume import ROOT, env, metrics, train_command  # noqa: E402

# --standalone: a free port per launch, so parallel test runs never meet on one.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_torchrun_two_processes_train_save_resume(tiny_model: Path, tiny_data: dict[str, Path],
                                                   tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    torchrun = TORCHRUN
    base = train_command(tiny_model, tiny_data["train"], runs, "two", "train.batch_size=4", "train.max_steps=4",
                         "train.save_every_n_steps=2", "train.mini_batch_size=3", "data.num_negatives=1")[1:]
    first = subprocess.run(torchrun + base + ["train.stop_after_steps=2"], env=env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=150)
    assert first.returncode == 0, first.stderr[-3000:]
    run = runs / "two"
    assert (run / "state" / "step-000002" / "trainer_state.json").exists()
    assert (run / "state" / "step-000002" / "random_states_1.pkl").exists()  # every rank saved its RNG
    assert not (run / "DONE.json").exists()
    assert json.loads((run / "run_info.json").read_text())["world_size"] == 2
    assert "2 processes" in first.stdout + first.stderr

    second = subprocess.run(torchrun + base + ["resume=auto"], env=env(), cwd=ROOT, capture_output=True, text=True,
                            timeout=150)
    assert second.returncode == 0, second.stderr[-3000:]
    records = metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # only rank 0 writes; no step twice or skipped
    assert [r["samples"] for r in records] == [8, 16, 24, 32]  # global batch = 4 per process x 2
    done = json.loads((run / "DONE.json").read_text())
    assert done["step"] == 4 and (Path(done["final_checkpoint"]) / "model.safetensors").exists()


def test_two_processes_log_the_mean_loss_and_refuse_a_one_process_resume(compose, tiny_model: Path,
                                                                          tiny_data: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """Without dropout the gathered loss of 2 x 4 queries equals one process on the 8: the logged loss is the mean
    over processes, not rank 0's own. A state saved by 2 processes is not resumed by 1."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from trainer.checkpointing import StateError
    from trainer.loop import train

    still = tmp_path / "no_dropout"
    config = AutoConfig.from_pretrained(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model, config=config).save_pretrained(still, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(still)
    runs = tmp_path / "runs"  # the compose fixture's paths.runs
    recipe = ["train.max_steps=3", "train.stop_after_steps=1", "train.save_every_n_steps=1", "data.num_negatives=1"]
    two = subprocess.run(TORCHRUN + train_command(still, tiny_data["train"], runs, "two", "train.batch_size=4",
                                                  *recipe)[1:],
                         env=env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    one = compose(f"model.name_or_path={still}", "name=one", "train.batch_size=8", "eval=none",
                  "logger.every_n_steps=1", *recipe)
    train(one)
    got, want = metrics(runs / "two")[0], metrics(runs / "one")[0]
    assert got["step"] == want["step"] == 1
    assert abs(got["loss"] - want["loss"]) < 1e-5, (got["loss"], want["loss"])
    with pytest.raises(StateError, match="saved by 2 processes and this run has 1"):
        train(compose(f"model.name_or_path={still}", "name=two", "train.batch_size=4", "eval=none", "resume=auto",
                      *recipe))


def test_launch_configs_parse() -> None:
    """Every accelerate config in launch/ loads with accelerate's own parser, with the intended setup."""
    from accelerate.commands.config.config_args import ClusterConfig

    expected = {"one_gpu": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED",
                "deepspeed_zero3": "DEEPSPEED"}
    for name, kind in expected.items():
        config = ClusterConfig.from_yaml_file(str(ROOT / "launch" / f"{name}.yaml"))
        assert str(config.distributed_type).endswith(kind), name
    fsdp = ClusterConfig.from_yaml_file(str(ROOT / "launch" / "fsdp.yaml"))
    assert fsdp.fsdp_config["fsdp_use_orig_params"] is True
    zero3 = ClusterConfig.from_yaml_file(str(ROOT / "launch" / "deepspeed_zero3.yaml"))
    assert zero3.deepspeed_config["zero_stage"] == 3
    assert "resume=auto" in (ROOT / "launch" / "slurm.sbatch").read_text()
