"""Sweeps: trial bookkeeping, the pre-flight check of swept keys, and the sweep summary.

    python -m trainer.train -m hparams_search=lr_temperature         # Optuna (TPE), conf/hparams_search/
    python -m trainer.train -m optim.lr=1e-5,3e-5 loss.temperature=0.02,0.05   # plain grid
    python -m trainer.sweep runs/<name>-sweep                        # rebuild the summary from the run dirs

Each trial is a normal run in ``<sweep dir>/<job.num>/`` (``run_dir`` follows Hydra's job dir in multirun) plus a
``trial.json`` (objective, metric, status, error). ``SweepSummary`` is a Hydra callback (``conf/train.yaml``):
before the first trial it checks that every swept key exists, after the last it writes ``summary.csv``,
``summary.md`` (ranked by the objective) and ``summary.png`` (objective against each swept parameter).
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trainer.config import CONF_DIR, in_multirun
from trainer.io import atomic_write_bytes, atomic_write_text

TRIAL_FILE = "trial.json"
SWEEP_FILE = "sweep.json"  # swept keys and direction, written before the first trial


def main_metric_name(cfg: DictConfig) -> Optional[str]:
    """The metric ``train`` returns (as ``Evaluator.main_metric``)."""
    if cfg.eval.get("metric"):
        return cfg.eval.metric
    from trainer.evaluation.kinds import main_metric

    return main_metric(cfg.eval.tasks[0]) if cfg.eval.tasks else None


def run_trial(cfg: DictConfig, fn: Callable[[DictConfig], Optional[float]]) -> Optional[float]:
    """Run ``fn(cfg)``; in multirun record the outcome in ``<run_dir>/trial.json`` and keep the sweep going.

    A failed trial is recorded with its error. Under Optuna the exception is passed on (the sweeper marks the
    trial FAIL and goes on, with ``max_failure_rate: 1.0``); under the grid sweeper NaN is returned instead,
    because it stops at the first raised exception.
    """
    if not in_multirun():
        return fn(cfg)
    run_dir = Path(cfg.run_dir)
    record: dict[str, Any] = {"metric": main_metric_name(cfg), "job_num": HydraConfig.get().job.num}
    try:
        value = fn(cfg)
    except Exception as err:  # noqa: BLE001 - a trial's failure is data for the sweep, not the end of it
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / TRIAL_FILE, json.dumps({**record, "status": "failed", "objective": None,
                                                             "error": f"{type(err).__name__}: {err}",
                                                             "traceback": traceback.format_exc()}, indent=2))
        traceback.print_exc()
        if "optuna" in str(HydraConfig.get().sweeper.get("_target_", "")):
            raise
        return float("nan")
    atomic_write_text(run_dir / TRIAL_FILE, json.dumps({**record, "status": "ok", "objective": value}, indent=2))
    return value


# ---- pre-flight check ------------------------------------------------------------------------------
def swept_keys(config: DictConfig) -> list[str]:
    """Keys swept by the Optuna params and by sweep overrides on the command line (``a.b=1,2``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = list((config.hydra.sweeper.get("params") or {}).keys())
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if override.is_sweep_override() and not override.is_add():
            keys.append(override.key_or_group)
    return list(dict.fromkeys(keys))


def check_swept_keys(config: DictConfig) -> None:
    """Fail before the first trial when a swept key is not in the composed config (config groups excepted)."""
    missing = [k for k in swept_keys(config)
               if OmegaConf.select(config, k, default="<missing>") == "<missing>" and not (CONF_DIR / k).is_dir()]
    if missing:
        raise KeyError(f"sweep: swept parameter(s) {', '.join(missing)} not found in the config; check "
                       f"hydra.sweeper.params in conf/hparams_search/ or the command line (python -m trainer.train "
                       "--cfg job prints every key)")


class SweepSummary(Callback):
    """Hydra callback: check swept keys at multirun start, write the summary at multirun end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_swept_keys(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")
        atomic_write_text(sweep_dir / SWEEP_FILE, json.dumps({"swept": swept_keys(config), "direction": str(direction),
                                                               "overrides": list(config.hydra.overrides.task)},
                                                              indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        print(write_summary(Path(config.hydra.sweep.dir)))


# ---- summary -----------------------------------------------------------------------------------------
def _sweep_info(sweep_dir: Path) -> tuple[list[str], str]:
    """Swept keys and direction from our ``sweep.json``, else Hydra's ``multirun.yaml`` (grid sweeps only)."""
    if (sweep_dir / SWEEP_FILE).exists():
        info = json.loads((sweep_dir / SWEEP_FILE).read_text())
        return info["swept"], "minimize" if "minimize" in info["direction"].lower() else "maximize"
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return [], "maximize"
    config = OmegaConf.create(yaml.safe_load(path.read_text()))
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")
    return swept_keys(config), direction if isinstance(direction, str) else "maximize"


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def collect_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per trial dir: overrides, status, objective (from trial.json, else eval.jsonl)."""
    trials = []
    for run in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        params = {}
        for item in overrides or []:
            key, _, value = item.partition("=")
            params[key.lstrip("+~")] = _parse_value(value)
        record: dict[str, Any] = {"trial": int(run.name), "params": params, "run_dir": str(run), "error": ""}
        trial_file = run / TRIAL_FILE
        if trial_file.exists():
            info = json.loads(trial_file.read_text())
            record.update(status=info["status"], objective=info.get("objective"), metric=info.get("metric"),
                          error=info.get("error", ""))
        else:
            record.update(status="incomplete", objective=None, metric=None)
        if record["objective"] is not None and not math.isfinite(record["objective"]):
            record["objective"] = None
        trials.append(record)
    return trials


def rank_trials(trials: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Trials with an objective first, best first; the rest (failed, incomplete) after, by trial number."""
    scored = sorted((t for t in trials if t["objective"] is not None), key=lambda t: t["objective"],
                    reverse=direction == "maximize")
    return scored + [t for t in trials if t["objective"] is None]


def write_summary(sweep_dir: Path) -> str:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; returns the markdown."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep dir")
    keys, direction = _sweep_info(sweep_dir)
    trials = collect_trials(sweep_dir)
    if not trials:
        raise FileNotFoundError(f"{sweep_dir}: no trial dirs (0/, 1/, ...)")
    if not keys:  # no multirun.yaml: the parameters whose values differ between trials
        all_keys = dict.fromkeys(k for t in trials for k in t["params"])
        keys = [k for k in all_keys if len({repr(t["params"].get(k)) for t in trials}) > 1]
    ranked = rank_trials(trials, direction)
    metric = next((t["metric"] for t in trials if t.get("metric")), None) or "objective"
    header = ["rank", "trial", "status", metric, *keys, "run_dir", "error"]
    rows = [[i + 1 if t["objective"] is not None else "", t["trial"], t["status"],
             "" if t["objective"] is None else f"{t['objective']:.6g}", *[t["params"].get(k, "") for k in keys],
             t["run_dir"], t["error"]] for i, t in enumerate(ranked)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    atomic_write_text(sweep_dir / "summary.csv", buffer.getvalue())
    md = [f"Sweep {sweep_dir} ({direction} {metric}; {sum(t['status'] == 'ok' for t in trials)}/{len(trials)} "
          "trials ok)", "", "| " + " | ".join(header[:-2] + ["error"]) + " |", "|" + "---|" * (len(header) - 1)]
    md += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ")[:80] for c in row[:-2] + [row[-1]]) + " |"
           for row in rows]
    text = "\n".join(md) + "\n"
    atomic_write_text(sweep_dir / "summary.md", text)
    plot_objective(trials, keys, metric, sweep_dir / "summary.png")
    return text


def plot_objective(trials: list[dict[str, Any]], keys: list[str], metric: str, path: Path) -> None:
    """One panel per swept parameter: objective of each completed trial against its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or ["trial"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    done = [t for t in trials if t["objective"] is not None]
    for ax, key in zip(axes[0], keys):
        values = [t["trial"] if key == "trial" else t["params"].get(key) for t in done]
        ys = [t["objective"] for t in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, ys)
            if values and min(values) > 0 and max(values) / min(values) > 20:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values], ys)
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m trainer.sweep <sweep_dir>``: rebuild a sweep's summary from its trials' run dirs."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainer.sweep",
                                     description="Rebuild summary.csv, summary.md and summary.png of a sweep from "
                                                 "its trials' run dirs (a sweep itself runs as python -m "
                                                 "trainer.train -m hparams_search=<name>).")
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder, e.g. runs/<name>-sweep")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir}: no such folder")
    print(write_summary(args.sweep_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
