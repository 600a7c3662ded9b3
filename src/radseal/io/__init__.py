"""Reading and writing images: DICOM, PNG, JPEG, TIFF."""

from __future__ import annotations

from pathlib import Path

from radseal.errors import ImageReadError, ImageWriteError
from radseal.image import Image
from radseal.io.files import atomic_write, check_output, check_outputs, read_regular_file

# radseal.io.dicom (pydicom) and radseal.io.raster (Pillow) load on first use: radseal.io.files
# serves key files and containers too, and those commands should not pay for a DICOM stack.
_LAZY = {
    "looks_like_dicom": "radseal.io.dicom",
    "read_dicom": "radseal.io.dicom",
    "to_dataset": "radseal.io.dicom",
    "write_dicom": "radseal.io.dicom",
    "encode_png": "radseal.io.raster",
    "read_raster": "radseal.io.raster",
    "write_png": "radseal.io.raster",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radseal.io' has no attribute {name!r}")

__all__ = [
    "read_image",
    "write_image",
    "write_png",
    "write_dicom",
    "to_dataset",
    "encode_png",
    "atomic_write",
    "check_output",
    "check_outputs",
]

_RASTER_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
)

MAX_FILE_BYTES = 2 << 30


def read_image(path: str | Path) -> Image:
    """Read a radiograph: DICOM (by content), PNG, JPEG or TIFF.

    Raises :class:`radseal.errors.ImageReadError` with a message that names
    the file and the problem.
    """
    from radseal.io.dicom import looks_like_dicom, read_dicom
    from radseal.io.raster import read_raster

    path = Path(path)
    data = read_regular_file(path, MAX_FILE_BYTES, "image file", ImageReadError)
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    if looks_like_dicom(data):
        return read_dicom(path, data)
    if data.startswith(_RASTER_MAGIC):
        return read_raster(path, data)
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        # DICOM without the 128-byte preamble (older files) still parses; anything else
        # named .dcm is "not a DICOM file" (read_dicom says so).
        return read_dicom(path, data)
    raise ImageReadError(f"{path}: unrecognised file type (expected DICOM, PNG, JPEG or TIFF)")


def write_image(img: Image, path: str | Path, *, replace: bool = True) -> Path:
    """Write by extension: .dcm/.dicom as DICOM, .png as PNG (``replace=False``: never over an existing file)."""
    from radseal.io.dicom import write_dicom
    from radseal.io.raster import write_png

    suffix = Path(path).suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return write_dicom(img, path, replace=replace)
    if suffix == ".png":
        return write_png(img, path, replace=replace)
    raise ImageWriteError(f"{path}: cannot write {suffix or 'files without an extension'}; use .png or .dcm")
