"""Every experiment composes and instantiates; a misspelled key fails at compose time naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from trainer.config import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_conf_dir_is_the_repo_conf() -> None:
    assert CONF_DIR == Path(__file__).resolve().parent.parent / "conf"
    assert "demo" in EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(compose, experiment: str) -> None:
    cfg = compose(f"experiment={experiment}")
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["model"]["pooling"] in ("mean", "cls", "last")
    OmegaConf.resolve(OmegaConf.create({k: v for k, v in container.items() if k in ("loss", "optim", "train")}))
    from trainer.build import build_contrastive
    from trainer.teachers.distill import build_distill_losses

    loss = build_contrastive(cfg.loss)
    assert isinstance(loss, torch.nn.Module) and loss.weight > 0
    aligned = cfg.get("distill") is not None and cfg.distill.get("align", False)  # the loop attached a 32 -> 48 head
    distill = build_distill_losses(cfg.get("distill"), 48 if aligned else 32, 48 if cfg.get("teacher") else None)
    if experiment == "distill":
        assert distill is not None and len(distill) > 0


@pytest.mark.parametrize("override,key", [("model.poolng=cls", "poolng"), ("train.batchsize=4", "batchsize"),
                                          ("loss.temprature=0.1", "temprature")])
def test_misspelled_key_fails_naming_it(compose, override: str, key: str) -> None:
    with pytest.raises(Exception) as err:
        compose(override)
    assert key in str(err.value)


def test_misspelled_key_in_a_yaml_file_fails(compose, tmp_path: Path) -> None:
    from hydra import compose as hydra_compose, initialize_config_dir

    bad = tmp_path / "conf"
    bad.mkdir()
    (bad / "train.yaml").write_text("defaults:\n  - train_schema\n  - _self_\nname: x\nrun_dir: y\n"
                                    "model:\n  name_or_path: z\n  max_lenght_query: 3\ndata:\n  train_files: []\n")
    with initialize_config_dir(config_dir=str(bad), version_base="1.3"):
        with pytest.raises(Exception, match="max_lenght_query"):
            hydra_compose(config_name="train")
