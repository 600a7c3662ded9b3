"""Durable files for the receiver, and the sweep of partial files after a crash.

Writes go through ``io.files.atomic_write(durable=True)``, whose temporary
names carry the host and process id; a receiver that starts after a crash
(SIGKILL, power loss) removes exactly the partial files that a dead process
on this host left behind, without touching those of a live receiver sharing
the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from radseal.io.files import HOST_TAG as _HOST
from radseal.io.files import PART_SUFFIX, atomic_write


def durable_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (file and folder fsync'd)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, data, durable=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_partial_files(root: Path) -> list[Path]:
    """Remove partial files under ``root`` left by dead processes of this host; return them."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for part in root.rglob(f".*{PART_SUFFIX}"):
        owner = part.name[: -len(PART_SUFFIX)].rsplit(".", 1)[-1]  # "<host>-<pid>-<random>"
        host_pid = owner.split("-")
        if len(host_pid) < 3 or host_pid[0] != _HOST or not host_pid[1].isdigit():
            continue
        # Our own pid at startup can only be a dead predecessor's (pid reuse in containers).
        if int(host_pid[1]) != os.getpid() and _pid_alive(int(host_pid[1])):
            continue
        try:
            part.unlink()
            removed.append(part)
        except FileNotFoundError:
            pass
    return removed


def partial_files(root: Path) -> list[Path]:
    """Every partial (temporary) file under ``root``, whoever wrote it."""
    root = Path(root)
    return sorted(root.rglob(f".*{PART_SUFFIX}")) if root.is_dir() else []
