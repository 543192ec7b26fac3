"""One training process tree per run dir: ``<run>/run.lock``.

    python -m trainer.train experiment=demo name=r1 resume=auto     # a second copy of this refuses to start

Two runs with the same name would overwrite each other's config, states, checkpoints and metrics (a requeued
SLURM job whose first instance still runs does exactly that). Rank 0 takes the lock before it reads or writes
anything in the run dir and holds it until training ends. The lock is an ``flock`` on the file, which the kernel
drops when its process dies, so a lock left behind by a killed run is taken over at once; the file names the
holder (pid, host, start time) for the message a second run gets. Where the file system has no ``flock``, the
holder's pid is checked instead (on the same host; a holder on another host is taken as alive unless it is an
earlier instance of this same SLURM job).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

LOCK_FILE = "run.lock"


class RunLocked(RuntimeError):
    """Another live process trains in this run dir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Without flock: is the process named in the lock file still running?"""
    if holder.get("host") == socket.gethostname():
        return int(holder.get("pid", 0)) > 0 and holder.get("pid") != os.getpid() and _alive(int(holder["pid"]))
    job = os.environ.get("SLURM_JOB_ID")
    return not (job and holder.get("slurm_job_id") == job)  # a requeued job's earlier instance is gone


class RunLock:
    """Context manager: hold ``<root>/run.lock`` or raise ``RunLocked`` naming the holder. ``enabled=False``
    (ranks other than 0) does nothing."""

    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.path = Path(root) / LOCK_FILE
        self.enabled = enabled
        self.fd: Optional[int] = None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self) -> RunLocked:
        h = self.holder()
        who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('started', '?')}"
        return RunLocked(f"{self.path.parent}: another training run holds this run dir ({who}; {self.path}). "
                         "Wait for it to finish or stop it, or pick another name=...; a lock left by a process "
                         "that is gone is taken over by the next start.")

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse() from None
        except OSError as err:  # no flock on this file system: fall back to the holder's pid
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if _holder_alive(self.holder()):
                raise self._refuse() from None

    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            # The file may have been unlinked by the holder that just released it: lock the one at the path.
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        else:
            raise RunLocked(f"{self.path}: could not take the lock (the file keeps being replaced)")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is None:
            return
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        finally:
            os.close(self.fd)  # releases the flock
            self.fd = None
