"""PNG, JPEG and TIFF through Pillow."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile, UnidentifiedImageError

from radseal.errors import ImageReadError, ImageWriteError
from radseal.image import Image

# Pillow logs damaged-file details at ERROR level before raising; with no logging set up,
# Python would print them on stderr next to the one-line error radseal gives.
logging.getLogger("PIL").addHandler(logging.NullHandler())


def _to_gray(pil: PILImage.Image, name: str) -> tuple[np.ndarray, int]:
    mode = pil.mode
    if mode in ("L", "P", "LA", "PA", "1"):
        return np.asarray(pil.convert("L"), dtype=np.uint8), 8
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(pil, dtype=np.uint16)
        return arr, _bits_for(arr, 16)
    if mode == "I":
        arr = np.asarray(pil, dtype=np.int64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{name}: 32-bit integer pixels outside 0..65535 are not supported")
        arr = arr.astype(np.uint16)
        return arr, _bits_for(arr, 16)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        rgb = np.asarray(pil.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0]), 8
        # A colour picture of a radiograph: keep the luminance, as a viewer would.
        return np.asarray(pil.convert("L"), dtype=np.uint8), 8
    raise ImageReadError(f"{name}: unsupported pixel mode {mode!r}")


def _bits_for(arr: np.ndarray, container_bits: int) -> int:
    """16-bit PNG/TIFF carry no bits-stored field: use the container depth.

    Guessing a smaller depth from the maximum value would change the PSNR
    peak with the image content; a user with 12-bit data in a 16-bit PNG can
    say so with ``Image(bits_stored=12)``.
    """
    return container_bits


_LOAD_LOCK = threading.Lock()


def _load_strict(pil: PILImage.Image) -> None:
    """Decode now, refusing truncated data whatever ImageFile.LOAD_TRUNCATED_IMAGES says elsewhere.

    With that switch on (a process-wide setting other code may turn on), Pillow
    fills the missing part of an image with zeros instead of failing.
    """
    with _LOAD_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            pil.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_filtered_size(width: int, height: int, depth: int, color: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (one filter byte per row) that a complete PNG image data stream holds."""
    bits = depth * _PNG_CHANNELS.get(color, 1)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            total += h * (1 + (w * bits + 7) // 8)
    return total


def _check_png_complete(path: Path, data: bytes) -> None:
    """Check what Pillow does not: that the PNG's image data holds every row.

    A PNG whose compressed stream ends cleanly but early decodes in Pillow with
    the missing rows as zeros. Written here (a walk over the chunks and one
    zlib pass that counts bytes, keeping none) because no library in the core
    install offers the check; Pillow has verified the chunk CRCs already.
    """
    import struct
    import zlib

    pos, header, inflater, produced = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise ImageReadError(f"{path}: damaged or truncated PNG (chunk {kind!r} cut short)")
        if kind == b"IHDR" and length >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            chunk = body
            try:
                while not inflater.eof:
                    out = len(inflater.decompress(chunk, 1 << 20))
                    produced += out
                    chunk = inflater.unconsumed_tail
                    if not chunk and out < 1 << 20:  # input used up and no output held back
                        break
            except zlib.error:
                raise ImageReadError(f"{path}: damaged or truncated PNG (bad image data stream)") from None
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ImageReadError(f"{path}: damaged or truncated PNG (no IHDR chunk)")
    width, height, depth, color, _, _, interlace = header
    expected = _png_filtered_size(width, height, depth, color, interlace == 1)
    if not inflater.eof or produced < expected:
        raise ImageReadError(f"{path}: damaged or truncated PNG (image data ends early: "
                             f"{produced} of {expected} bytes)")


def read_raster(path: Path, data: bytes) -> Image:
    # Pillow warns (on stderr) about damaged EXIF and the like, and raises many types on
    # damaged files (TypeError for missing TIFF tags, DecompressionBombError, ...).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pil = PILImage.open(io.BytesIO(data))
            _load_strict(pil)
            if getattr(pil, "n_frames", 1) > 1:
                pil.seek(0)
            pixels, bits = _to_gray(pil, str(path))
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(f"{path}: cannot decode image (damaged or not a PNG, JPEG or TIFF file)") from None
        except PILImage.DecompressionBombError:
            raise ImageReadError(f"{path}: image dimensions are too large (over {PILImage.MAX_IMAGE_PIXELS} pixels)") from None
        except MemoryError:
            raise ImageReadError(f"{path}: image too large to decode in memory") from None
        except Exception as exc:  # noqa: BLE001 - see above
            raise ImageReadError(f"{path}: cannot decode image ({exc or type(exc).__name__})") from None
    if pil.format == "PNG":
        _check_png_complete(path, data)
    return Image(
        pixels=pixels,
        bits_stored=bits,
        photometric="MONOCHROME2",
        metadata={"source_format": (pil.format or "unknown").upper(), "source_name": Path(path).name},
    )


def encode_png(img: Image) -> bytes:
    """PNG bytes at 8 bits (<= 8 stored) or 16 bits, values unchanged.

    PNG samples are unsigned and carry no offset: a signed image (DICOM
    Pixel Representation 1, held shifted by 2**(bits_stored-1)) would come
    back as different numbers, so it is refused; DICOM keeps it exactly.
    """
    if img.signed:
        raise ImageWriteError(
            "signed pixel values (DICOM Pixel Representation 1) cannot be stored in PNG without "
            "changing them; write DICOM instead (-o NAME.dcm)"
        )
    buf = io.BytesIO()
    if img.pixels.dtype == np.uint8:
        PILImage.fromarray(img.pixels, mode="L").save(buf, format="PNG")
    else:
        pil = PILImage.frombytes("I;16", (img.width, img.height), img.pixels.astype("<u2").tobytes())
        pil.save(buf, format="PNG")
    return buf.getvalue()


def write_png(img: Image, path: str | Path, *, replace: bool = True) -> Path:
    """Write ``img`` as PNG through a temporary file; ``replace=False`` never replaces an existing file."""
    from radseal.io.files import atomic_write

    data = encode_png(img)
    try:
        return atomic_write(path, data, replace=replace)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write PNG ({exc.strerror or exc})") from None
