"""The baseline codecs (see the package docstring)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from radseal.errors import RadsealError
from radseal.image import Image

MAGIC = b"RSB"
_HEAD = struct.Struct("<3sBBBBB")  # magic, codec number, bits stored, flags, shift, reserved


class BaselineError(RadsealError):
    """A baseline codec could not encode or decode (bad stream, unsupported input)."""


@dataclass(frozen=True)
class Baseline:
    name: str
    number: int
    param_name: str
    sweep: tuple  # quality knob values, low rate to high rate (8-bit images)
    sweep_high_depth: tuple  # the same for images of more than 8 bits
    lossless: bool
    max_bits: int  # deepest input coded natively; deeper input is shifted down
    _encode: Callable[[np.ndarray, int, object], bytes]
    _decode: Callable[[bytes], np.ndarray]

    def params_for(self, img: Image) -> tuple:
        return self.sweep if img.bits_stored <= 8 else self.sweep_high_depth

    def compress(self, img: Image, param=None) -> bytes:
        shift = max(0, img.bits_stored - self.max_bits)
        px = img.pixels >> shift if shift else img.pixels
        bits = img.bits_stored - shift
        try:
            payload = self._encode(np.ascontiguousarray(px), bits, param)
        except RadsealError:
            raise
        except Exception as exc:  # imagecodecs raises its own error types
            raise BaselineError(f"{self.name}: encoding failed ({exc})") from None
        flags = (1 if img.photometric == "MONOCHROME1" else 0) | (2 if img.signed else 0)
        return _HEAD.pack(MAGIC, self.number, img.bits_stored, flags, shift, 0) + payload

    def decompress(self, data: bytes) -> Image:
        if len(data) < _HEAD.size:
            raise BaselineError(f"{self.name}: stream truncated")
        magic, number, bits, flags, shift, _ = _HEAD.unpack_from(data)
        if magic != MAGIC or number != self.number or not 1 <= bits <= 16 or flags > 3 or shift > 15:
            raise BaselineError(f"{self.name}: not a {self.name} baseline stream")
        try:
            px = np.asarray(self._decode(bytes(data[_HEAD.size :])))
        except RadsealError:
            raise
        except Exception as exc:
            raise BaselineError(f"{self.name}: decoding failed ({exc})") from None
        if px.ndim == 3:
            px = px[..., 0]
        px = px.astype(np.int64) << shift
        px = np.clip(px, 0, (1 << bits) - 1)
        return Image(
            px.astype(np.uint8 if bits <= 8 else np.uint16),
            bits_stored=bits,
            photometric="MONOCHROME1" if flags & 1 else "MONOCHROME2",
            signed=bool(flags & 2),
        )


def _ic():
    from radseal.extras import require

    return require("imagecodecs", "evaluate", "the JPEG, JPEG 2000, JPEG XL and AVIF baselines")


def _jpeg_enc(px, bits, q):
    return _ic().jpeg8_encode(px, level=int(q), bitspersample=8 if bits <= 8 else 12)


def _j2k_enc(px, bits, target_db):
    # imagecodecs' ``level`` for JPEG 2000 is OpenJPEG's fixed-quality target PSNR in dB.
    return _ic().jpeg2k_encode(px, level=float(target_db), codecformat="j2k", bitspersample=bits, reversible=False)


def _jxl_enc(px, bits, distance):
    return _ic().jpegxl_encode(px, distance=float(distance), effort=7, bitspersample=bits)


def _avif_enc(px, bits, quality):
    rgb = np.repeat(px[..., None], 3, axis=2)
    return _ic().avif_encode(rgb, level=int(quality), speed=6, bitspersample=bits)


def _jls_enc(px, bits, _):
    return _ic().jpegls_encode(px)


def _jxl_ll_enc(px, bits, _):
    return _ic().jpegxl_encode(px, lossless=True, effort=3, bitspersample=bits)


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("jpeg", 1, "quality", (3, 5, 10, 20, 35, 50, 70, 85, 92), (2, 3, 5, 10, 20, 35, 50, 70, 85), False, 12, _jpeg_enc, lambda d: _ic().jpeg8_decode(d)),
        Baseline(
            "jpeg2000",
            2,
            "target_psnr_db",
            (33, 35, 37, 39, 41, 43, 45, 47, 49, 51),
            (39, 41, 43, 45, 47, 49, 51, 53, 55, 57),
            False,
            16,
            _j2k_enc,
            lambda d: _ic().jpeg2k_decode(d),
        ),
        Baseline("jpegxl", 3, "distance", (12, 8, 5, 3.5, 2.5, 1.8, 1.2, 0.8, 0.55), (12, 8, 5, 3.5, 2.5, 1.8, 1.2, 0.8, 0.55, 0.35), False, 16, _jxl_enc, lambda d: _ic().jpegxl_decode(d)),
        Baseline("avif", 4, "quality", (10, 20, 30, 40, 50, 60, 70, 80, 88), (10, 20, 30, 40, 50, 60, 70, 80, 88, 94), False, 12, _avif_enc, lambda d: _ic().avif_decode(d)),
        Baseline("jpegls", 5, "none", (None,), (None,), True, 16, _jls_enc, lambda d: _ic().jpegls_decode(d)),
        Baseline("jpegxl-lossless", 6, "none", (None,), (None,), True, 16, _jxl_ll_enc, lambda d: _ic().jpegxl_decode(d)),
    )
}


def get_baseline(name: str) -> Baseline:
    try:
        return BASELINES[name]
    except KeyError:
        raise BaselineError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})") from None
