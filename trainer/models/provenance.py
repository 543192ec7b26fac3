"""Where a model came from, said without the training machine's paths: Hub ids and portable references.

    python -c "from trainer.models.provenance import hub_id; from trainer.assets import minilm; \
               print(hub_id(str(minilm())))"        # sentence-transformers/all-MiniLM-L6-v2

A checkpoint is published as it is, so its metadata must not name folders of the machine that trained it. A base
model is named by its Hub id when that id can be known from the model's own files, never by a guess:

1. a Hub id given as such (``model.name_or_path=sentence-transformers/all-MiniLM-L6-v2``);
2. an embedstill checkpoint: the base model its ``embedstill.json`` names (training continued from it);
3. a bundled asset (``trainer/assets.py``) whose folder is a copy of a Hub repository, as its own README says;
4. a folder of the Hugging Face cache (``models--ORG--NAME/snapshots/REV``);
5. a folder whose README loads exactly one Hub id in its usage code (``SentenceTransformer('ORG/NAME')``), as every
   sentence-transformers model card does.

Anything else is a local model: only its folder name is kept. Other absolute paths in metadata become relative to
the checkpoint when they lie inside its run, else their last component.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

# A Hub repository id: ``name`` or ``owner/name`` (letters, digits, ``._-``; no leading ``.`` or ``-``).
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
USAGE_ID = re.compile(r"""(?:SentenceTransformer|from_pretrained)\(\s*['"]([^'"]+)['"]""")
CACHE_DIR = re.compile(r"^models--([\w.-]+)--([\w.-]+)$")
# Suffixes that mark a data file rather than a Hub dataset id.
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".gz", ".bz2", ".zip")


def _bundled() -> dict[str, Callable[[], Path]]:
    """Bundled asset folders that are copies of Hub repositories (each folder's README names the same id)."""
    from trainer import assets

    return {"sentence-transformers/all-MiniLM-L6-v2": assets.minilm,
            # the teacher's folder without extracting it (``assets.mpnet()`` would join and unzip the parts)
            "sentence-transformers/all-mpnet-base-v2": lambda: assets.cache_dir() / "all-mpnet-base-v2"}


def _same_folder(a: Path, b: Callable[[], Path]) -> bool:
    try:
        return a.resolve() == Path(b()).resolve()
    except (OSError, ImportError):  # an asset package that is not installed
        return False


def _from_own_card(folder: Path) -> Optional[str]:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    ids = {m for m in USAGE_ID.findall(readme.read_text(encoding="utf-8", errors="replace"))
           if "/" in m and HUB_ID.match(m)}
    return ids.pop() if len(ids) == 1 else None


def _checkpoint_base(folder: Path) -> tuple[bool, Optional[str], Optional[str]]:
    """(is an embedstill checkpoint, its base model's Hub id, its base model's name)."""
    meta_file = folder / "embedstill.json"
    if not meta_file.is_file():
        return False, None, None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    base, name = meta.get("base_model"), meta.get("base_model_name")
    base = base if isinstance(base, str) and HUB_ID.match(base) else None
    return True, base, name if isinstance(name, str) else None


def hub_id(source: str | os.PathLike[str]) -> Optional[str]:
    """The Hub id of the model at ``source`` (a Hub id or a local folder) when its own files say it, else None."""
    text, path = str(source), Path(source).expanduser()
    if not text:
        return None  # an encoder built in memory, from no named source
    if not path.exists():
        return text if HUB_ID.match(text) else None
    is_checkpoint, base, _ = _checkpoint_base(path)
    if is_checkpoint:
        return base
    for repo, where in _bundled().items():
        if _same_folder(path, where):
            return repo
    parts = path.resolve().parts
    for i, part in enumerate(parts[:-2]):
        match = CACHE_DIR.match(part)
        if match and parts[i + 1] == "snapshots":
            return f"{match.group(1)}/{match.group(2)}"
    return _from_own_card(path)


def model_name(source: str | os.PathLike[str]) -> str:
    """A short name for a model: its Hub id when known, else (an embedstill checkpoint) its base model's name,
    else the last component of its name or folder."""
    _, _, base_name = _checkpoint_base(Path(source).expanduser())
    return hub_id(source) or base_name or Path(str(source).rstrip("/")).name


def model_card_metadata(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML metadata of a base model's card (license, language, ...) when its folder is here; else ``{}``."""
    path = Path(source).expanduser()
    readme = path / "README.md" if path.is_dir() else None
    repo = hub_id(source) if readme is None else None
    if repo in _bundled():
        try:
            readme = Path(_bundled()[repo]()) / "README.md"
        except OSError:  # the asset package is not installed
            readme = None
    elif repo is not None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo, "README.md")
        except Exception:  # noqa: BLE001 - an odd cache layout only costs the license line
            cached = None
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None or not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    try:
        data = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def portable_path(value: str, folder: Path, anchor: Path) -> str:
    """An absolute path as metadata may keep it: relative to ``folder`` when inside ``anchor`` (the run), else the
    model's Hub id or the path's last component. Relative paths and other strings are returned unchanged."""
    if not os.path.isabs(value):
        return value
    path = Path(value)
    if _inside(path, anchor):
        return os.path.relpath(path.resolve(), folder.resolve())
    return model_name(path)


def portable_metadata(value: Any, folder: Path, anchor: Path) -> Any:
    """``value`` (metadata: dicts, lists, strings) with every absolute path made portable (``portable_path``)."""
    if isinstance(value, dict):
        return {k: portable_metadata(v, folder, anchor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_metadata(v, folder, anchor) for v in value]
    if isinstance(value, str):
        return portable_path(value, folder, anchor)
    return value


def hub_dataset_ids(data: Any) -> list[str]:
    """Strings of a data config that name Hub datasets: ``owner/name``, no data-file suffix, not a local path."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif (isinstance(value, str) and value.count("/") == 1 and HUB_ID.match(value)
              and not value.lower().endswith(DATA_SUFFIXES) and not Path(value).exists()):
            found.append(value)

    walk(data)
    return list(dict.fromkeys(found))
