"""File helpers shared by every writer: never leave half a file behind."""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from radseal.errors import OutputExistsError

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


def atomic_write(
    path: str | Path, data: bytes, mode: int | None = None, *, durable: bool = False, replace: bool = True
) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash or a full disk leaves either the old file or the new one, never a
    truncated one. ``mode`` sets the permission bits before the data lands
    (private keys use 0o600); by default the process umask applies, as with open().
    ``durable`` also fsyncs the folder, so that the new name itself survives
    a power cut (the receiver answers only after that).
    ``replace=False`` never replaces an existing file, even one that appears
    while the data is written: the finished temporary file is hard-linked to
    ``path`` (which fails if the name exists) and raises
    :class:`radseal.errors.OutputExistsError`.
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
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
            if os.path.lexists(tmp):
                os.unlink(tmp)
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


def _link_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists (atomically where links work)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
        raise OutputExistsError(f"{path}: already exists (pass --force to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a narrow race remains).
        if os.path.lexists(path):
            raise OutputExistsError(f"{path}: already exists (pass --force to replace it)") from None
        os.rename(tmp, path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(
    path: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    force: bool = False,
    hint: str = "pass --force to replace it",
) -> Path:
    """Refuse an output that is one of ``inputs`` (always) or that exists (unless ``force``).

    Commands call this before any work, so that a refusal costs nothing; the
    write itself then goes through :func:`atomic_write` with ``replace=force``,
    which closes the window between this check and the rename.
    """
    path = Path(path)
    for name in inputs:
        if name is not None and _same_file(path, Path(name)):
            raise OutputExistsError(f"{path}: is also an input; choose another output name")
    if os.path.lexists(path) and not path.is_dir() and not force:
        raise OutputExistsError(f"{path}: already exists; {hint}")
    return path


def check_outputs(
    folder: str | Path,
    names: Iterable[str],
    *,
    inputs: Iterable[str | Path] = (),
    force: bool = False,
    hint: str = "pass --force to replace them, or choose another folder",
) -> None:
    """:func:`check_output` for a command that writes fixed names into ``folder``: one line names them all."""
    folder = Path(folder)
    inputs = [Path(i) for i in inputs if i is not None]
    paths = [folder / n for n in names]
    for p in paths:
        check_output(p, inputs=inputs, force=True)
    existing = [p.name for p in paths if os.path.lexists(p) and not p.is_dir()]
    if existing and not force:
        shown = ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
        raise OutputExistsError(f"{folder}: already holds {shown}; {hint}")


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
