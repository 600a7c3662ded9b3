"""Durable files for the receiver: fsync'd, atomic, and sweepable after a crash.

``io.files.atomic_write`` already writes through a temporary file and a
rename. Here the temporary name also carries the host and process id, so a
receiver that starts after a crash (SIGKILL, power loss) can remove exactly
the partial files that a dead process on this host left behind, without
touching those of a live receiver sharing the folder. The folder is fsync'd
after the rename so that the new name itself survives a power cut.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

_HOST = socket.gethostname().replace(".", "_").replace("-", "_")[:32] or "host"
PART_SUFFIX = ".part"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (file and folder fsync'd)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}-", suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


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
