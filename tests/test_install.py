"""Installing beside other packages: ranges in pyproject.toml, the tested set in constraints.txt, every import
declared, optional dependencies that say how to install them.

    pytest -q tests/test_install.py
"""
from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NOT_IN_MAKE = {"mteb"}  # extras `make` does not install (mteb needs internet for its tasks)


def declared() -> dict[str, list[Requirement]]:
    """{"": core requirements, extra: its requirements}."""
    return {"": [Requirement(r) for r in PROJECT["dependencies"]],
            **{e: [Requirement(r) for r in reqs] for e, reqs in PROJECT["optional-dependencies"].items()}}


def pins() -> dict[str, Version]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def test_constraints_pin_every_requirement_inside_its_range() -> None:
    pinned = pins()
    for extra, reqs in declared().items():
        if extra in NOT_IN_MAKE:
            continue
        for req in reqs:
            version = pinned.get(canonicalize_name(req.name))
            assert version is not None, f"constraints.txt: no pin for {req} ({extra or 'core'}): run `make constraints`"
            assert req.specifier.contains(version, prereleases=True), \
                f"constraints.txt: {req.name}=={version} is outside pyproject.toml's {req}"


def test_installed_versions_are_inside_the_declared_ranges() -> None:
    for extra, reqs in declared().items():
        for req in reqs:
            try:
                installed = Version(metadata.version(req.name))
            except metadata.PackageNotFoundError:
                assert extra, f"{req.name} (a core dependency) is not installed"
                continue  # an extra that is not installed here
            assert req.specifier.contains(installed, prereleases=True), f"installed {req.name}=={installed}: not {req}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value.split(".")[0])  # trainer.optional.require("wandb", ...)
    return names


def test_every_imported_package_is_declared() -> None:
    """A package imported by the code must be a declared dependency (core or an extra), not a transitive one."""
    names = {canonicalize_name(r.name) for reqs in declared().values() for r in reqs}
    owners = metadata.packages_distributions()
    local = {"trainer", "conftest", "prepare", "prepare_eval", "news", "wordnet", "eval_tasks"} | \
        {p.stem for p in (ROOT / "data").glob("*.py")}
    missing = []
    for path in sorted([*(ROOT / "trainer").rglob("*.py"), *(ROOT / "data").glob("*.py")]):
        for module in _imports(path) - set(sys.stdlib_module_names) - local:
            dists = {canonicalize_name(d) for d in owners.get(module, [module])}
            if not dists & names:
                missing.append(f"{path.relative_to(ROOT)}: imports {module} ({', '.join(sorted(dists))})")
    assert missing == []


def test_logger_wandb_without_wandb_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from trainer.metrics_logger import MetricsLogger
    from trainer.run import RunDir

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    monkeypatch.delenv("WANDB_MODE", raising=False)  # WANDB_MODE=disabled would need no wandb at all
    cfg = OmegaConf.create({"kind": "wandb", "mode": "offline", "project": "p", "tags": []})
    with pytest.raises(ImportError, match=r"logger=wandb needs the wandb package.*pip install 'embedstill\[wandb\]'"):
        MetricsLogger(cfg, RunDir(tmp_path), OmegaConf.create({}))
    none = MetricsLogger(OmegaConf.create({"kind": "none", "mode": "offline", "project": "p", "tags": []}),
                         RunDir(tmp_path), OmegaConf.create({}))
    none.log({"step": 1, "loss": 0.5})  # everything else runs without wandb
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"step": 1, "loss": 0.5}'


def test_license_is_apache_2_like_the_bundled_assets() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["license"] == "Apache-2.0" and citation["version"] == PROJECT["version"]
