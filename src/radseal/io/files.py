"""File helpers shared by every writer: never leave half a file behind."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

#: Temporary files are named ``.<name>.<host>-<pid>-<random>.part`` so that a
#: process starting after a crash can tell which partial files a dead
#: process on this host left behind (see transport.files.sweep_partial_files).
PART_SUFFIX = ".part"
HOST_TAG = socket.gethostname().replace(".", "_").replace("-", "_")[:32] or "host"


def _default_mode() -> int:
    # mkstemp creates 0600 files; ordinary outputs should get what open() would give.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_MODE = _default_mode()


def atomic_write(path: str | Path, data: bytes, mode: int | None = None, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash or a full disk leaves either the old file or the new one, never a
    truncated one. ``mode`` sets the permission bits before the data lands
    (private keys use 0o600); by default the process umask applies, as with open().
    ``durable`` also fsyncs the folder, so that the new name itself survives
    a power cut (the receiver answers only after that).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.{HOST_TAG}-{os.getpid()}-", suffix=PART_SUFFIX)
    try:
        os.fchmod(fd, _DEFAULT_MODE if mode is None else mode)
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
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def read_regular_file(path: str | Path, limit: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or ``error`` naming the problem.

    Folders, devices (/dev/zero) and FIFOs are refused: they would be read
    without end or block for ever. The read is bounded even if the file
    grows meanwhile. ``what`` names the file's role in messages ("key file").
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{path}: is a folder, not a {what}")
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes is too large for a {what} (limit {limit})")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{path}: grew beyond the {limit}-byte limit for a {what} while being read")
    return data
