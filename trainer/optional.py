"""Optional dependencies: imported where a feature needs them, with a message that says how to install them.

    python -c "from trainer.optional import require; require('wandb', 'logger=wandb', 'wandb')"

The core install (``pip install embedstill``) trains, evaluates and publishes. Extras add the rest:
``wandb`` (logger=wandb), ``export`` (ONNX), ``sweep`` (Optuna), ``decoder`` (GGUF models), ``mteb``, ``dev`` (tests).
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    """An optional package a configured feature needs is not installed."""


def require(module: str, feature: str, extra: str) -> ModuleType:
    """Import ``module`` for ``feature`` (e.g. ``logger=wandb``), or raise naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependency(f"{feature} needs the {module} package, which is not installed: "
                                f"pip install 'embedstill[{extra}]' (or choose another setting)") from err
