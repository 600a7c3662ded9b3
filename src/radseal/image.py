"""The one image type every stage passes along."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
# Largest image (width x height) decoded unless the caller allows more: 25 megapixels
# (5000 x 5000) holds every radiograph format in use; the shipped codec's decoder needs
# about 40 bytes and 0.2 microseconds per pixel (docs/deploy.md has the measurement).
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass
class Image:
    """A grayscale radiograph at its native bit depth.

    ``pixels`` holds the stored values, unsigned (uint8 for up to 8 bits
    stored, uint16 above), H x W. Signed DICOM data is shifted by
    ``2**(bits_stored-1)`` so that every codec sees unsigned samples; ``signed``
    records it so that writing DICOM restores the original values.
    ``photometric`` is kept as stored: MONOCHROME1 pixels are *not* inverted,
    use :meth:`display_pixels` for a view where bright means dense.
    ``source`` is the pydicom Dataset the image came from (None otherwise);
    ``metadata`` holds small, JSON-friendly facts about the source.
    """

    pixels: np.ndarray
    bits_stored: int = 8
    photometric: str = "MONOCHROME2"
    signed: bool = False
    source: Any = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim != 2:
            raise ValueError(f"Image pixels must be 2-D (H x W), got shape {px.shape}")
        if not 1 <= int(self.bits_stored) <= 16:
            raise ValueError(f"bits_stored must be 1..16, got {self.bits_stored}")
        if self.photometric not in PHOTOMETRICS:
            raise ValueError(f"photometric must be one of {PHOTOMETRICS}, got {self.photometric!r}")
        dtype = np.uint8 if self.bits_stored <= 8 else np.uint16
        if px.dtype != dtype:
            if px.size and (px.min() < 0 or px.max() > self.max_value):
                raise ValueError(
                    f"pixel values {px.min()}..{px.max()} do not fit {self.bits_stored} bits"
                )
            px = px.astype(dtype)
        self.pixels = np.ascontiguousarray(px)
        self.bits_stored = int(self.bits_stored)

    @property
    def max_value(self) -> int:
        """The peak value 2**bits - 1 (PSNR uses it)."""
        return (1 << int(self.bits_stored)) - 1

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def raw_bytes(self) -> int:
        """Bytes of the pixels packed at whole bytes per sample (1 or 2)."""
        return int(self.pixels.size * self.pixels.dtype.itemsize)

    def normalized(self) -> np.ndarray:
        """Stored values as float32 in [0, 1] (no inversion)."""
        return self.pixels.astype(np.float32) / float(self.max_value)

    def display_pixels(self) -> np.ndarray:
        """Float32 in [0, 1] where 1 is bright (MONOCHROME1 inverted)."""
        x = self.normalized()
        return 1.0 - x if self.photometric == "MONOCHROME1" else x

    def with_pixels(self, pixels: np.ndarray) -> "Image":
        """A copy carrying new pixels and the same description."""
        return Image(
            pixels=pixels,
            bits_stored=self.bits_stored,
            photometric=self.photometric,
            signed=self.signed,
            source=self.source,
            metadata=dict(self.metadata),
        )
