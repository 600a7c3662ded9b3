"""File helpers shared by every writer: never leave half a file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _default_mode() -> int:
    # mkstemp creates 0600 files; ordinary outputs should get what open() would give.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_MODE = _default_mode()


def atomic_write(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash or a full disk leaves either the old file or the new one, never a
    truncated one. ``mode`` sets the permission bits before the data lands
    (private keys use 0o600); by default the process umask applies, as with open().
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
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
    return path
