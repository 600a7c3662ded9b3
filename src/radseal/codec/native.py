"""Lossless and guaranteed-maximum-error coding at the image's stored depth (``rsn1``).

``codec.compress(img, max_error=k)``: k = 0 decodes to exactly the stored
values; k >= 1 guarantees ``max |decoded - original| <= k`` on every pixel,
by construction: each pixel's prediction residual is quantized with step
2k + 1 against the *reconstructed* causal neighbours (as JPEG-LS NEAR does),
so the decoder forms the same prediction and the error of every pixel is the
quantization error of its own residual, at most k.

The pixel loop is the compiled engine ``radseal.codec._engine`` (C; see
``csrc/rsengine.c``): an adaptive linear predictor (normalized LMS with
integer weights) on the causal 5 x 3 window (at the image borders, a blend of
eight fixed predictors weighted by their recent local errors), bias
cancellation per texture/activity context, and
adaptive binary arithmetic coding of the residual under contexts of
quantized local activity, starting from probabilities learned by
``radseal fit-codec --native`` (:mod:`radseal.codec.native_fit`). A
pure-Python reference of the prediction and context rule is in
:mod:`radseal.codec.native_reference`.

Payload (inside the usual ``RSLC`` container, whose ``quality`` field holds
k and whose ``low``/``high`` the image's range)::

    1 byte   flags: bit 0 = values are coded as indices into the set of used values
    [if bit 0] 4 bytes  number of used values n; 4 bytes length L; L bytes: the gaps
                        between used values (engine integer stream)
    4 bytes  CRC-32 of the decoded stored values (uint16, little-endian, row-major)
    ...      the pixel stream (engine)

Values are coded as ``stored - low`` (range 0..high-low). Histogram packing
(bit 0) is used for lossless streams of images that leave stored values
unused (a LUT-mapped or rescaled detector output): prediction then runs on
the indices, which is what makes such images cheap.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from radseal.codec import bitstream
from radseal.codec.api import Codec
from radseal.codec.errors import BitstreamError, CodecError, WeightsError
from radseal.image import Image

MODEL_ID = "rsn1-nlms-ctx"
FLAG_PACKED = 1
MAX_ERROR_LIMIT = 65535


def engine():
    """The compiled engine; a clear error if the package was installed without building it."""
    try:
        from radseal.codec import _engine
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise CodecError(
            "radseal's compiled engine is missing (reinstall with 'pip install -e .' on a machine with a C compiler)"
        ) from exc
    return _engine


def _crc(values: np.ndarray) -> bytes:
    return struct.pack("<I", zlib.crc32(np.ascontiguousarray(values, dtype="<u2")) & 0xFFFFFFFF)


def _gap_contexts(n: int) -> bytes:
    return bytes(4 * n)  # one context (0) for every gap and sign


class NativeCodec(Codec):
    """The native-depth predictive coder; one per set of learned initial tables."""

    family = "native"
    num_qualities = 1

    def __init__(self, init: np.ndarray | None, model_id: str = MODEL_ID, info: dict | None = None):
        super().__init__(model_id, info)
        eng = engine()
        if init is None:
            self._init = b""
        else:
            init = np.asarray(init)
            if init.shape != (eng.NBITS,) or init.min() < eng.PROB_MIN or init.max() > eng.PROB_MAX:
                raise WeightsError("native codec weights do not match the engine (initial table shape or range)")
            self._init = init.astype("<u2").tobytes()

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], model_id: str, info: dict | None = None) -> "NativeCodec":
        if "tables.init" not in state:
            raise WeightsError("native codec weights lack tables.init")
        return cls(state["tables.init"], model_id, info)

    # -- coding ----------------------------------------------------------------------------
    def compress(self, img: Image, quality: int | None = None, bpp: float | None = None,
                 max_error: int | None = None) -> bytes:
        if quality is not None or bpp is not None:
            raise CodecError("the native-depth coder takes max_error only (0 = lossless)")
        return self.compress_native(img, 0 if max_error is None else max_error)

    def compress_qualities(self, img: Image, qualities) -> dict[int, bytes]:
        raise CodecError("the native-depth coder has no quality levels; use max_error")

    def compress_native(self, img: Image, max_error: int) -> bytes:
        if not isinstance(img, Image):
            raise CodecError(f"compress expects a radseal Image, got {type(img).__name__}")
        if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) or not 0 <= max_error <= MAX_ERROR_LIMIT:
            raise CodecError(f"max_error must be an integer in 0..{MAX_ERROR_LIMIT}, got {max_error!r}")
        k = int(max_error)
        h, w = img.shape
        if h < 1 or w < 1 or h > bitstream.MAX_SIDE or w > bitstream.MAX_SIDE or h * w > bitstream.MAX_PIXELS:
            raise CodecError(f"image size {h}x{w} is outside what the codec supports")
        px = img.pixels
        low, high = int(px.min()), int(px.max())
        x = np.subtract(px, low, dtype=np.uint16)  # 0..high-low
        payload = self._encode_values(x, high - low, k)
        header = bitstream.Header(model_id=self.model_id, height=h, width=w, bits_stored=img.bits_stored,
                                  photometric=img.photometric, signed=bool(img.signed), quality=k, low=low, high=high)
        return bitstream.pack(header, payload)

    def _encode_values(self, x: np.ndarray, maxval: int, k: int) -> bytes:
        eng = engine()
        h, w = x.shape
        flags, table = 0, b""
        coded, coded_max = x, maxval
        if k == 0 and maxval > 0:
            used = np.flatnonzero(np.bincount(x.ravel(), minlength=maxval + 1))
            if used.size < maxval + 1:
                flags |= FLAG_PACKED
                lut = np.zeros(maxval + 1, np.uint16)
                lut[used] = np.arange(used.size, dtype=np.uint16)
                coded, coded_max = lut[x], int(used.size - 1)
                gaps = (np.diff(used) - 1).astype("<i4")
                stream = eng.code_ints(gaps.tobytes(), _gap_contexts(gaps.size), _gap_contexts(gaps.size), b"")
                table = struct.pack("<II", used.size, len(stream)) + stream
        if coded_max == 0:
            pixels, recon = b"", x
        else:
            pixels, rec = eng.encode(np.ascontiguousarray(coded).tobytes(), h, w, coded_max, k, self._init, False, True)
            recon = x if k == 0 else np.frombuffer(rec, dtype="<u2").reshape(h, w)
        return bytes([flags]) + table + _crc(recon) + pixels

    def _decode_values(self, pixels: bytes, h: int, w: int, maxval: int, k: int) -> np.ndarray:
        if maxval == 0:
            if pixels:
                raise BitstreamError("codec stream has pixel data for a constant image")
            return np.zeros((h, w), np.uint16)
        try:
            out = engine().decode(pixels, h, w, maxval, k, self._init)
        except ValueError as exc:
            raise BitstreamError(f"codec stream damaged: {exc}") from None
        return np.frombuffer(out, dtype="<u2").reshape(h, w)

    def decompress(self, data: bytes) -> Image:
        header, payload = bitstream.unpack(data)
        if header.model_id != self.model_id:
            return super().decompress(data)  # dispatch to the model that made the stream
        h, w, k = header.height, header.width, header.quality
        maxval = header.high - header.low
        if not payload:
            raise BitstreamError("codec stream has an empty payload")
        flags, pos = payload[0], 1
        if flags & ~FLAG_PACKED:
            raise BitstreamError(f"codec stream has unknown flags {flags:#x}")
        used = None
        if flags & FLAG_PACKED:
            if k != 0 or maxval == 0 or len(payload) < pos + 8:
                raise BitstreamError("codec stream has an invalid value table")
            n, length = struct.unpack_from("<II", payload, pos)
            pos += 8
            if not 1 <= n <= maxval or len(payload) < pos + length:
                raise BitstreamError("codec stream has an invalid value table")
            try:
                gaps = np.frombuffer(engine().decode_ints(payload[pos:pos + length], _gap_contexts(n - 1),
                                                          _gap_contexts(n - 1), b""), dtype="<i4")
            except ValueError as exc:
                raise BitstreamError(f"codec stream has a damaged value table: {exc}") from None
            pos += length
            if (gaps < 0).any() or int(gaps.astype(np.int64).sum()) + n - 1 != maxval:
                raise BitstreamError("codec stream has an inconsistent value table")
            used = np.concatenate([[0], np.cumsum(gaps.astype(np.int64) + 1)]).astype(np.uint16)
        if len(payload) < pos + 4:
            raise BitstreamError("codec stream truncated")
        crc, pos = payload[pos:pos + 4], pos + 4
        coded_max = maxval if used is None else int(used.size - 1)
        x = self._decode_values(payload[pos:], h, w, coded_max, k)
        if used is not None:
            x = used[x]
        if _crc(x) != crc:
            raise BitstreamError("codec stream decodes to values that fail their checksum (damaged or forged)")
        dtype = np.uint8 if header.bits_stored <= 8 else np.uint16
        values = np.add(x, header.low, dtype=np.uint16)  # header.high < 2**bits_stored: no overflow
        return Image(
            pixels=values if dtype == np.uint16 else values.astype(dtype),
            bits_stored=header.bits_stored,
            photometric=header.photometric,
            signed=header.signed,
            metadata={"codec": self.model_id, "max_error": k, "mode": describe_mode(k)},
        )


def describe_mode(max_error: int) -> str:
    return "lossless" if max_error == 0 else f"near-lossless, max error {max_error}"


_DEFAULT: NativeCodec | None = None


def default_native() -> NativeCodec:
    """The installed native-depth coder (its learned tables if registered, else flat tables)."""
    global _DEFAULT
    if _DEFAULT is None:
        from radseal.codec.errors import UnknownModelError

        try:
            _DEFAULT = Codec.pretrained(MODEL_ID)
        except UnknownModelError:
            _DEFAULT = NativeCodec(None)
    return _DEFAULT
