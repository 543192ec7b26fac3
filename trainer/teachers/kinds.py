"""Teacher kinds by name: each kind's file registers the schema of its settings.

    python -m trainer.train teacher=mpnet teacher.max_length_passage=256     # checked against bi_encoder_schema
    pytest tests/test_registries.py -k teacher

A kind is a class in ``trainer/teachers/<kind>.py`` (the ``Teacher`` protocol of ``trainer.teachers``) and a
dataclass of its settings whose ``_target_`` names the class, registered with ``register_teacher_kind``. Every
module of the package is imported when the configs are registered, and each schema is stored in Hydra's
ConfigStore as ``teacher/<kind>_schema``; a YAML in ``conf/teacher/`` starts with
``defaults: [<kind>_schema, _self_]``, so a key the kind does not have fails at compose time, and the teacher is
built by ``hydra.utils.instantiate`` from exactly those settings.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

TEACHER_KINDS: dict[str, type] = {}


def register_teacher_kind(kind: str, config: type) -> type:
    """Add ``config`` (a dataclass with ``_target_``) as the schema of ``kind``; returns it (usable as a decorator)."""
    target = getattr(config, "_target_", None)
    if not isinstance(target, str) or not target:
        raise ValueError(f"teacher kind {kind!r}: its settings need a _target_ naming the teacher class")
    known = TEACHER_KINDS.get(kind)
    if known is not None and known.__qualname__ != config.__qualname__:
        raise ValueError(f"teacher kind {kind!r} is registered twice ({known.__module__} and {config.__module__})")
    TEACHER_KINDS[kind] = config
    return config


def discover() -> dict[str, type]:
    """Import every module of ``trainer.teachers`` (kinds register on import); the kinds, by name."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):  # this package's folder, not an import of it
        importlib.import_module(f"{__package__}.{module.name}")
    return dict(sorted(TEACHER_KINDS.items()))


def store_schemas(store: Any) -> None:
    """Put ``teacher/<kind>_schema`` in Hydra's ConfigStore ``store`` for every kind."""
    for kind, config in discover().items():
        store.store(group="teacher", name=f"{kind}_schema", node=config)


def is_kind(teacher_cfg: Any, kind: str) -> bool:
    """Whether a composed ``teacher`` node builds the class of ``kind`` (None: no teacher)."""
    config = discover().get(kind)
    return teacher_cfg is not None and config is not None and teacher_cfg.get("_target_") == config._target_
