"""Exceptions radseal raises on purpose.

Every error a user can cause derives from :class:`RadsealError`; the CLI turns
these (and only these) into one line ``radseal: error: ...`` and a non-zero
exit status. Anything else is a bug and keeps its traceback.
"""


class RadsealError(Exception):
    """Base class of every error radseal reports to a user."""

    exit_code = 2


class ImageReadError(RadsealError):
    """A file could not be read as an image (missing, truncated, unsupported)."""


class ImageWriteError(RadsealError):
    """An image could not be written where asked."""


class DatasetError(RadsealError):
    """A data folder does not have a layout radseal understands."""


class OutputExistsError(RadsealError):
    """An output would replace an existing file (without --force) or an input (never)."""
