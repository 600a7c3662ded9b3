"""Durable, private files for the receiver and the sender, and the sweep of partial files after a crash.

Writes go through ``io.files.atomic_write(durable=True)``, whose temporary
names carry the host and process id; a receiver that starts after a crash
(SIGKILL, power loss) removes exactly the partial files that a dead process
on this host left behind, without touching those of a live receiver sharing
the folder.

Everything the transport writes holds patient data or facts about it (sealed
messages, derived DICOM objects, receipts with a diagnosis), so files are
created ``0600`` and folders ``0700`` whatever the umask. radseal's own
folders (the receiver's state folder and archive, the sender's outbox) are
made ``0700`` even when they exist (written by an earlier version, or
created by a caller); other folders that exist already, such as a store root
shared with a PACS importer, keep the mode an operator gave them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from radseal.io.files import HOST_TAG as _HOST
from radseal.io.files import PART_SUFFIX, atomic_write

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_mkdir(path: Path) -> Path:
    """Create ``path`` and any missing parent as ``0700`` folders; existing folders are left as they are."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(folder, DIR_MODE)  # mkdir's mode is reduced by the umask; be exact
    if not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))
    return path


def own_private_dir(path: Path) -> Path:
    """Create ``path`` like :func:`private_mkdir` and make it ``0700`` if it exists with wider access."""
    path = private_mkdir(path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is readable by its owner only (``0600``); for SQLite files.

    An absent file is created empty (an empty file is a valid empty SQLite
    database), so that SQLite, which gives its ``-wal`` and ``-shm`` files the
    database file's mode, never creates any of them world-readable. An existing
    file that is readable by others (written by an older radseal) is tightened.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(f"{path}{suffix}")
        try:
            if side.stat().st_mode & 0o077:
                os.chmod(side, FILE_MODE)
        except FileNotFoundError:
            pass
    return path


def durable_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (file and folder fsync'd), private to the owner."""
    path = Path(path)
    private_mkdir(path.parent)
    return atomic_write(path, data, FILE_MODE, durable=True)


def durable_write_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` durably unless ``path`` exists; True if this call created it.

    The complete file appears under its name at once (a hard link of a
    fsync'd temporary file), and an existing file is never replaced, even by a
    concurrent writer in another process: the archive keeps the first bytes
    recorded under a name.
    """
    path = Path(path)
    directory = private_mkdir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.{_HOST}-{os.getpid()}-", suffix=PART_SUFFIX)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive check, then rename
            if path.exists():
                return False
            os.rename(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
