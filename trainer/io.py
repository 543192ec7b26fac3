"""File plumbing shared by every stage (standard library only; numpy is imported where ``.npz`` is written).

    python -c "from trainer.io import read_jsonl; print(next(read_jsonl('data/build/news/train.jsonl')))"

* Atomic writes: ``atomic_write_text`` / ``atomic_write_bytes`` / ``atomic_write_json`` / ``save_npz_atomic`` write
  a temporary sibling file, then rename it; ``atomic_dir`` does the same for a whole folder. A killed process
  leaves the previous file (or folder) or none, never half of one.
* JSON lines: ``read_lines`` / ``read_jsonl`` decode one line at a time, so every error names ``path:line``:
  ``path:line: field: problem``.
* Safe names: ``SAFE_NAME`` is what may name a result file or a task (letters, digits, ``.``, ``_``, ``-``).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# A plain file name: a letter or digit first, then letters, digits, '.', '_' or '-' (at most 100).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    _atomic_file(Path(path), "wb", lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its pieces, one after another; UTF-8) to a temporary sibling file, then rename."""
    _atomic_file(Path(path), "w", lambda f: f.write(text) if isinstance(text, str) else f.writelines(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``json.dumps(obj, indent=2)`` plus a line break, written atomically (``default=str`` for paths, dates)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_npz_atomic(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` to a temporary sibling file, then rename."""
    import numpy as np

    _atomic_file(Path(path), "wb", lambda f: np.savez(f, **arrays), suffix=".npz")


def atomic_save(path: str | Path, save: Callable[[Path], Any]) -> None:
    """Call ``save(tmp)`` for a library that writes by file name (``fig.savefig``), then rename ``tmp`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        save(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_file(path: Path, mode: str, write: Callable[[Any], Any], suffix: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.stem if suffix else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{stem}-", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; a result is as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir(parent: Path, name: str) -> Path:
    """A new empty folder ``parent/.tmp-<name>-<random>`` created like any folder of the user: mode 0777 minus the
    umask. ``tempfile.mkdtemp`` makes it 0700, and the renamed checkpoint would stay unreadable to the group."""
    for _ in range(100):
        tmp = parent / f".tmp-{name}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{parent}: no free temporary folder name for {name}")


def current_umask() -> int:
    """The process's umask (from /proc where it is shown, so the umask is never changed, even for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_per_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the permissions the umask allows (files ``0666 & ~umask``,
    folders ``0777 & ~umask``), keeping any it has already: safetensors writes its files 0600, and a checkpoint
    must be as readable as anything else the user writes."""
    umask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o7777
        wanted = mode | ((0o777 if path.is_dir() else 0o666) & ~umask)
        if wanted != mode:
            path.chmod(wanted)


def atomic_dir(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temporary sibling folder, then rename it to ``target`` (its files and folders
    readable as the umask allows)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(target.parent, target.name)
    try:
        write(tmp)
        readable_per_umask(tmp)
        if target.exists():
            # Replacing an existing folder: move it aside first so there is always one complete copy.
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_lines(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without the line break) for each non-blank line of ``path``, decoded one line at
    a time; raises ``error`` with ``path:line: row: not valid UTF-8 (...)``."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield line_no, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise error(f"{path}:{line_no}: row: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1})") from None


def read_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded value) for each non-blank line of ``path``.

    Raises ``error`` with ``path:line: row: not valid UTF-8 (...)`` or ``path:line: row: invalid JSON: ...``.
    """
    for line_no, text in read_lines(path, error):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{line_no}: row: invalid JSON: {err.msg} at column {err.colno}") from None
        yield line_no, value
