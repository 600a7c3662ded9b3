"""``Codec``: compress an :class:`~radseal.image.Image` to bytes and back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from radseal.codec import bitstream
from radseal.codec.entropy import Z_RANGE, scale_index
from radseal.codec.errors import BitstreamError, CodecError, UnknownModelError
from radseal.codec.integer import ACT_BITS
from radseal.codec.layout import LATENT_STRIDE, PAD_MULTIPLE
from radseal.codec.weights import load_npz, resolve
from radseal.image import Image


class Codec:
    """The learned codec with one set of weights.

    >>> codec = Codec.pretrained()
    >>> data = codec.compress(img, quality=8)        # or bpp=0.3
    >>> img2 = codec.decompress(data)                 # same size, bit depth, photometric
    """

    def __init__(self, runtime, model_id: str, info: dict | None = None):
        self._rt = runtime
        self.model_id = model_id
        self.info = dict(info or {})

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def pretrained(cls, model_id: str | None = None, weights_dir: str | Path | None = None) -> "Codec":
        """The shipped weights (offline); ``model_id`` None means the registry's default."""
        from radseal.codec.runtime import Runtime

        mid, path, entry = resolve(model_id, Path(weights_dir) if weights_dir else None)
        return cls(Runtime.from_state(load_npz(path)), mid, entry)

    @classmethod
    def from_file(cls, path: str | Path, model_id: str = "local") -> "Codec":
        """Weights from an exported ``.npz`` outside the registry (experiments)."""
        from radseal.codec.runtime import Runtime

        return cls(Runtime.from_state(load_npz(Path(path))), model_id)

    # -- description -----------------------------------------------------------------------
    @property
    def qualities(self) -> tuple[int, ...]:
        """Valid ``quality`` values, low (smallest files) to high."""
        return tuple(range(1, self._rt.num_qualities + 1))

    @property
    def default_quality(self) -> int:
        return 10

    # -- coding ----------------------------------------------------------------------------
    def compress(self, img: Image, quality: int | None = None, bpp: float | None = None) -> bytes:
        """Compress ``img``. Give ``quality`` (see :attr:`qualities`) or a target ``bpp``.

        With ``bpp`` the highest quality whose stream fits the target is chosen
        (the lowest quality if none fits).
        """
        if quality is not None and bpp is not None:
            raise CodecError("give quality or bpp, not both")
        if bpp is None:
            q = self.default_quality if quality is None else quality
            return self.compress_qualities(img, [q])[q]
        if not (math.isfinite(bpp) and bpp > 0):
            raise CodecError(f"bpp must be a positive number, got {bpp}")
        encode = self._encoder(img)
        budget = bpp * img.height * img.width / 8.0
        lo_q, hi_q = self.qualities[0], self.qualities[-1]
        best = encode(lo_q)
        if len(best) > budget:
            return best
        lo_q += 1
        while lo_q <= hi_q:  # binary search: highest quality that fits
            mid = (lo_q + hi_q) // 2
            data = encode(mid)
            if len(data) <= budget:
                best, lo_q = data, mid + 1
            else:
                hi_q = mid - 1
        return best

    def compress_qualities(self, img: Image, qualities) -> dict[int, bytes]:
        """One stream per quality, sharing the analysis transform (for sweeps)."""
        qs = list(qualities)
        for q in qs:
            if not isinstance(q, (int, np.integer)) or int(q) not in self.qualities:
                raise CodecError(f"quality must be an integer in {self.qualities[0]}..{self.qualities[-1]}, got {q!r}")
        encode = self._encoder(img)
        return {int(q): encode(int(q)) for q in qs}

    def _encoder(self, img: Image):
        """Analyse ``img`` once; return quality -> bytes."""
        if not isinstance(img, Image):
            raise CodecError(f"compress expects a radseal Image, got {type(img).__name__}")
        h, w = img.shape
        if h < 1 or w < 1 or h > bitstream.MAX_SIDE or w > bitstream.MAX_SIDE or h * w > bitstream.MAX_PIXELS:
            raise CodecError(f"image size {h}x{w} is outside what the codec supports")
        low, high = int(img.pixels.min()), int(img.pixels.max())
        x = (img.pixels.astype(np.float32) - low) / float(max(high - low, 1))
        hp, wp = _padded(h), _padded(w)
        x = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge")
        y_raw = self._rt.analysis(x)

        def encode(q: int) -> bytes:
            header = bitstream.Header(
                model_id=self.model_id,
                height=h,
                width=w,
                bits_stored=img.bits_stored,
                photometric=img.photometric,
                signed=bool(img.signed),
                quality=q,
                low=low,
                high=high,
            )
            return bitstream.pack(header, self._encode_latent(y_raw, q))

        return encode

    def decompress(self, data: bytes) -> Image:
        """Decode a stream made by :meth:`compress` into an Image at its native bit depth."""
        header, payload = bitstream.unpack(data)
        if header.model_id != self.model_id:
            try:
                other = Codec.pretrained(header.model_id)
            except UnknownModelError:
                raise UnknownModelError(
                    f"stream was made by codec model {header.model_id!r}, which is not installed (this codec: {self.model_id!r})"
                ) from None
            return other.decompress(data)
        if header.quality not in self.qualities:
            raise BitstreamError(f"stream declares quality {header.quality}, outside {self.qualities[0]}..{self.qualities[-1]}")
        hp, wp = _padded(header.height), _padded(header.width)
        y_hat = self._decode_latent(payload, header.quality, hp // LATENT_STRIDE, wp // LATENT_STRIDE)
        x = self._rt.synthesis(y_hat)[: header.height, : header.width]
        span = float(max(header.high - header.low, 1))
        values = np.rint(x.astype(np.float64) * span + header.low)
        values = np.clip(values, header.low, header.high)
        dtype = np.uint8 if header.bits_stored <= 8 else np.uint16
        return Image(
            pixels=values.astype(dtype),
            bits_stored=header.bits_stored,
            photometric=header.photometric,
            signed=header.signed,
            metadata={"codec": self.model_id, "quality": header.quality},
        )

    # -- latent coding ---------------------------------------------------------------------
    def _encode_latent(self, y_raw, quality: int) -> bytes:
        z_sym, y_sym, idx = self._symbols(y_raw, quality)
        return self._rt.tables.encode(z_sym, y_sym, idx)

    def _symbols(self, y_raw, quality: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z symbols, y symbols, y table indices) the encoder writes for one quality."""
        gain, _ = self._rt.gains(quality)
        y = y_raw * gain
        z = self._rt.hyper_analysis(y).numpy()
        z_sym = np.clip(np.rint(z), -Z_RANGE, Z_RANGE).astype(np.int64)
        mean_fx, idx = self.hyper_synthesis(z_sym)
        mean = mean_fx.astype(np.float64) / (1 << ACT_BITS)
        half = self._rt.tables.y_half[idx]
        y_sym = np.clip(np.rint(y.numpy().astype(np.float64) - mean), -half, half).astype(np.int64)
        return z_sym, y_sym, idx

    def encoder_symbols(self, img: Image, quality: int) -> tuple[np.ndarray, np.ndarray]:
        """(z symbols, y symbols) that :meth:`compress` writes for ``img`` (for checks)."""
        low, high = int(img.pixels.min()), int(img.pixels.max())
        x = (img.pixels.astype(np.float32) - low) / float(max(high - low, 1))
        x = np.pad(x, ((0, _padded(img.height) - img.height), (0, _padded(img.width) - img.width)), mode="edge")
        z_sym, y_sym, _ = self._symbols(self._rt.analysis(x), quality)
        return z_sym, y_sym

    def _decode_latent(self, payload: bytes, quality: int, hl: int, wl: int):
        tables = self._rt.tables
        coder = tables.open_stream(payload)
        nz = tables.z_counts.shape[0]
        try:
            z_sym = tables.decode_z(coder, (nz, hl // 4, wl // 4))
            mean_fx, idx = self.hyper_synthesis(z_sym)
            y_sym = tables.decode_y(coder, idx)
            clean = coder.is_empty()
        except BitstreamError:
            raise
        except Exception as exc:  # constriction refuses a payload it cannot parse
            raise BitstreamError(f"entropy decoding failed: {exc}") from None
        if not clean:
            raise BitstreamError("entropy-coded payload did not decode cleanly (corrupted, or made with other weights)")
        mean = mean_fx.astype(np.float64) / (1 << ACT_BITS)
        import torch

        _, inv_gain = self._rt.gains(quality)
        y_hat = torch.from_numpy((y_sym + mean).astype(np.float32))
        return y_hat * inv_gain

    def hyper_synthesis(self, z_sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer means (fixed point) and table indices from the hyper-latent symbols: exact everywhere."""
        mean_fx, scale_fx = self._rt.hs_int(z_sym)
        return mean_fx, scale_index(scale_fx, self._rt.thresholds)

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(z symbols, y symbols) of a stream, without running the synthesis (for checks)."""
        header, payload = bitstream.unpack(data)
        hp, wp = _padded(header.height), _padded(header.width)
        tables = self._rt.tables
        coder = tables.open_stream(payload)
        hl, wl = hp // LATENT_STRIDE, wp // LATENT_STRIDE
        z_sym = tables.decode_z(coder, (tables.z_counts.shape[0], hl // 4, wl // 4))
        _, idx = self.hyper_synthesis(z_sym)
        return z_sym, tables.decode_y(coder, idx)

    def __repr__(self) -> str:
        return f"Codec(model_id={self.model_id!r}, qualities={self.qualities[0]}..{self.qualities[-1]})"


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE
