"""The sequential wavelet coder (``rsc3-cdf97-seq``): rsc2's transform and quantizer, coded
coefficient by coefficient in the compiled engine with adaptive probabilities.

Transform, quality steps, band-balanced steps and dead zone are those of the
wavelet codec (:mod:`radseal.codec.subband`; the same weights file supplies
them). What changes is the coding: every coefficient is coded in raster order
within its band by the engine's adaptive binary integer coder
(``radseal.codec._engine.seq_encode``/``seq_decode``, ``csrc/rsengine.c``),
under a context computed from its *decoded* causal neighbours in its own band
(N, W, NW, NE, NN, WW), its parent and the bands of its level already coded
at its position; the rule is restated in Python in
:mod:`radseal.codec.seq_reference` and tested against the compiled one. The
low-pass band is coded as MED-predicted residuals. Probabilities start at 1/2
and adapt as the image is coded; nothing learned enters the parse path.

Qualities: 1..16 are rsc2's (the weights file's steps, 50 -> 2 grey levels
of the image's own range mapped to 0..255); 17..``NUM_SEQ_QUALITIES`` (46)
continue the same geometric progression (x 0.807 per rung) down to 0.0032,
just under one stored unit of a full-range 16-bit image (255 / 65535 =
0.0039), so the ladder reaches near-lossless at any depth. Qualities 1..16
analyse and reconstruct in float32 exactly as before (their streams and
decoded images are unchanged); 17 and above use float64 from the stored
values on (measured on a 512 x 512 16-bit image at quality 46, float32 moves
coefficients by up to 9% of the step, changes 0.9% of the symbols and moves
the synthesis by up to 0.08 stored values). Only pixels see the float; the
parse stays integer. The largest symbol at quality 46 stays below the engine's
2^24 (see :data:`SYMBOL_LIMIT`).

Encoder-side rate-distortion choice: a coefficient quantized to +-1 is coded
as 0, and a magnitude >= 2 is lowered by one, when the squared error it would
save is worth less than ``RDO_LAMBDA`` squared steps per bit of its cost under
the coder's *current* adaptive probabilities (the decoder sees the decision,
as later contexts do).

Format 1 (what the encoder writes) adds, in the engine, an adaptive
probability map after the mixer (its context includes the brightness of the
low-pass band), and in the payload optional per-level step weights and a
least-squares loop filter applied after the inverse transform
(:mod:`radseal.codec.loopfilter`). The encoder sends no loop filter by
default (``LOOP_FILTER = None``): it bought 0.8% of BD-rate on training images
for several times the encode time and memory (docs/codec.md); every decoder
applies one when a stream carries it.

Payload (inside the usual ``RSLC`` container)::

    1 byte    format (0 or 1)
    2 x B     per band, the reconstruction offsets of magnitude 1 and of
              magnitudes >= 2 within their bin, in 1/256 of a step (uint8)
    ...       format 1 only: band weights (a count, 0 or the number of levels, then
              per level, coarsest first, a step multiplier in 1/64; the low-pass
              band takes the coarsest level's), then the loop filter
              (:mod:`radseal.codec.loopfilter`)
    4 bytes   CRC-32 of the bytes between the format byte and the CRC, then the
              decoded symbols (int32, little-endian, coding order)
    ...       the engine's coefficient stream

Format 0 (the first rsc3) has no loop filter; both decode. The encoder writes
format 1.

Everything the decoder does up to the symbols is integer arithmetic; the
dequantization and inverse transform are float and touch only pixels.

The transform, quantizer and dequantizer run in the engine as well (its
section 6: the arithmetic of :mod:`radseal.codec.wavelet` and of rsc2's
quantizer, operation for operation, tested against them), in place on one
array in the :func:`radseal.codec.wavelet.pack` layout, and the symbols are
coded in place: beyond the pixels, encoding holds 12 bytes per pixel
(coefficients, symbols, |c| / step) and decoding 8 (symbols, coefficients).
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np

from radseal.codec import loopfilter, wavelet
from radseal.codec.api import Codec, normalized
from radseal.codec.errors import BitstreamError, CodecError
from radseal.codec.subband import LEVELS, NUM_QUALITIES, PIXEL_SCALE, SubbandModel

MODEL_ID = "rsc3-cdf97-seq"
#: the payload format the encoder writes; FORMATS are those the decoder reads
FORMAT = 1
FORMATS = (0, 1)
#: loop filter options (loopfilter.fit's keywords); None: the encoder sends no filter
LOOP_FILTER: dict | None = None
#: qualities of this coder: rsc2's 16, then the same geometric step ladder on to near-lossless
NUM_SEQ_QUALITIES = 46
#: the engine codes magnitudes below 2^24 (the largest possible symbol at quality 46 is about
#: 9.4 million: see tests/test_native_lossy.py); the engine refuses anything beyond
SYMBOL_LIMIT = (1 << 24) - 1
#: squared quantizer steps per bit (the high-rate value 2 ln 2 / 12 = 0.116 is what rsc2 uses)
RDO_LAMBDA = 0.116
#: format 1: step multipliers per detail level, finest first (the rest 1); None sends none.
#: A finest level 1.12x coarser trades about 0.8% of PSNR BD-rate for about 2.4% of MS-SSIM
#: BD-rate (docs/codec.md, "What was tried" and Results).
BAND_WEIGHTS: tuple | None = (1.12,)


def _weights_bytes(weights, nlev: int) -> bytes:
    w = [1.0] * nlev
    for i, v in enumerate(weights[:nlev]):
        w[nlev - 1 - i] = v  # coarsest first, as the bands are coded
    return bytes(int(np.clip(round(v * 64), 1, 255)) for v in w)


def _encode_weights(weights, nlev: int) -> bytes:
    """Format 1's band weights field: a count (0 or the number of levels), then per level,
    coarsest first, its step multiplier in 1/64."""
    return bytes([0]) if weights is None else bytes([nlev]) + _weights_bytes(weights, nlev)


def _decode_weights(payload: bytes, pos: int, nlev: int):
    if pos >= len(payload):
        raise BitstreamError("sequential wavelet payload is truncated (band weights)")
    n = payload[pos]
    if n == 0:
        return None, pos + 1
    if n != nlev or pos + 1 + n > len(payload) or 0 in payload[pos + 1 : pos + 1 + n]:
        raise BitstreamError("sequential wavelet payload has malformed band weights")
    return bytes(payload[pos + 1 : pos + 1 + n]), pos + 1 + n


def engine():
    from radseal.codec.native import engine as _engine

    return _engine()


def band_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Shapes of the bands in coding order: low-pass, then per level (coarsest first) hl, lh, hh."""
    ll_shape, sizes = wavelet.band_shapes(height, width, LEVELS)
    out = [tuple(ll_shape)]
    for lo_r, hi_r, lo_c, hi_c in sizes:
        out += [(lo_r, hi_c), (hi_r, lo_c), (hi_r, hi_c)]
    return out


def flatten(p: wavelet.Pyramid) -> np.ndarray:
    parts = [p.ll.ravel()] + [b[o].ravel() for b in p.details for o in wavelet.ORIENTATIONS]
    return np.concatenate(parts).astype(np.int32)


def band_steps(codec: "SeqCodec", quality: int, height: int, width: int, weights=None) -> np.ndarray:
    """Quantizer step of every band in coding order (float64): low-pass, then hl, lh, hh per level;
    ``weights`` (format 1) is a tuple of multipliers (finest first) or the payload field's bytes."""
    nlev = (len(band_shapes(height, width)) - 1) // 3
    ll_step, steps = codec.band_steps(quality, nlev)
    if weights is not None and nlev:
        w = [b / 64.0 for b in (weights if isinstance(weights, bytes) else _weights_bytes(weights, nlev))]
        ll_step, steps = ll_step * w[0], [{o: v * w[i] for o, v in s.items()} for i, s in enumerate(steps)]
    return np.array([ll_step] + [s[o] for s in steps for o in wavelet.ORIENTATIONS], dtype=np.float64)


class _Analysis:
    """The stored values, analysed on demand (engine's packed layout): in float32 from 0..1
    (qualities 1..16, as rsc2 does) and in float64 from the stored values (the qualities above)."""

    def __init__(self, codec: "SeqCodec", pixels: np.ndarray, low: int, high: int):
        self.codec, self.pixels, self.low, self.high = codec, pixels, low, high
        self._f32 = self._f64 = None

    def coefficients(self, quality: int) -> np.ndarray:
        if quality <= NUM_QUALITIES:
            if self._f32 is None:
                self._f32 = self.codec._analyse(normalized(self.pixels, self.low, self.high))
            return self._f32
        if self._f64 is None:
            scale = PIXEL_SCALE / float(max(self.high - self.low, 1))
            x = (self.pixels.astype(np.float64) - self.low) * scale
            engine().wt_forward(x, x.shape[0], x.shape[1], LEVELS, True)
            self._f64 = x
        return self._f64

    def original(self) -> np.ndarray:
        """The pixels on the 0..255 scale (float32), what the loop filter is fitted against."""
        return normalized(self.pixels, self.low, self.high) * np.float32(PIXEL_SCALE)


def _little_endian(a: np.ndarray) -> np.ndarray:
    return a if sys.byteorder == "little" else a.astype("<i4")


class SeqCodec(Codec):
    """The sequential wavelet coder as a :class:`~radseal.codec.api.Codec`."""

    family = "seq"
    num_qualities = NUM_SEQ_QUALITIES

    def __init__(self, model: SubbandModel, model_id: str = MODEL_ID, info: dict | None = None, rdo: bool = True,
                 loop_filter: dict | None = LOOP_FILTER, fmt: int = FORMAT, rdo_levels: bool = True,
                 band_weights: tuple | None = BAND_WEIGHTS):
        super().__init__(model_id, info)
        self.model = model
        self.rdo = rdo
        self.loop_filter = loop_filter
        self.rdo_levels = rdo_levels
        self.band_weights = band_weights
        if fmt not in FORMATS:
            raise CodecError(f"unknown rsc3 payload format {fmt}")
        self.format = fmt

    @classmethod
    def from_state(cls, state, model_id: str, info: dict | None = None) -> "SeqCodec":
        return cls(SubbandModel(state), model_id, info)

    def _analyse(self, x01: np.ndarray) -> np.ndarray:
        """rsc2's analysis (float32, pixels scaled to 0..255), in place in the engine's packed layout."""
        x = np.multiply(x01, np.float32(PIXEL_SCALE), dtype=np.float32)
        engine().wt_forward(x, x.shape[0], x.shape[1], LEVELS, False)
        return x

    def _analyse_image(self, pixels: np.ndarray, low: int, high: int) -> _Analysis:
        return _Analysis(self, pixels, low, high)

    def quality_step(self, quality: int) -> float:
        """The quality's step on the 0..255 scale: the weights' step up to 16, then their last
        ratio continued (0.807 per rung for the shipped weights)."""
        steps = self.model.steps
        if quality <= NUM_QUALITIES:
            return float(steps[quality - 1])
        return float(steps[-1] * (steps[-1] / steps[-2]) ** (quality - NUM_QUALITIES))

    def band_steps(self, quality: int, levels: int) -> tuple[float, list[dict[str, float]]]:
        if quality <= NUM_QUALITIES:
            return self.model.band_steps(quality, levels)
        return self.model.band_steps_at(self.quality_step(quality), levels)

    def encode_symbols(self, coeffs, height: int, width: int, quality: int,
                       original: np.ndarray | None = None) -> tuple[bytes, np.ndarray]:
        """(payload, final symbols in coding order) for one quality; ``coeffs`` is the packed
        array :meth:`_analyse` returns or a :class:`~radseal.codec.wavelet.Pyramid`. With the
        original pixels on the 0..255 scale (``original``) and ``loop_filter`` set, the loop
        filter is fitted and sent (format 1)."""
        m = self.model
        x = np.ascontiguousarray(wavelet.pack(coeffs) if isinstance(coeffs, wavelet.Pyramid) else coeffs)
        if x.dtype not in (np.float32, np.float64) or x.shape != (height, width):
            raise CodecError("wavelet coefficients do not match the image")
        dbl = x.dtype == np.float64
        # band weights trade PSNR for MS-SSIM at chest X-ray rates, and lowering magnitudes >= 2
        # adds error a step at a time; above 16 the ladder aims at near-lossless, so neither is used
        weights = self.band_weights if self.format >= 1 and quality <= NUM_QUALITIES else None
        steps = band_steps(self, quality, height, width, weights)
        shp = np.asarray(band_shapes(height, width), dtype=np.int32).ravel()
        eng = engine()
        use_rdo = self.rdo and RDO_LAMBDA > 0
        # symbols and |c| / step in 1/256 (the rate-distortion input), both in coding order
        sym = np.empty(height * width, dtype=np.int32)
        rdo = np.empty(height * width if use_rdo else 0, dtype=np.int32)
        eng.seq_quantize(x, height, width, LEVELS, dbl, steps, m.rounding, sym, rdo)
        if use_rdo:
            first = np.frombuffer(eng.seq_offsets(x, height, width, LEVELS, dbl, steps, m.rounding, sym), dtype=np.uint8)
            keep = int(round((1.0 - m.rounding) * 256)) + first[0::2].astype(np.int32)
            keep[0] = 0
            if self.rdo_levels and quality <= NUM_QUALITIES:  # the engine may also lower magnitudes >= 2 by one
                keep2 = int(round(-m.rounding * 256)) + first[1::2].astype(np.int32)
                keep2[0] = 0
                keep = np.concatenate([keep, keep2])
            lam = int(round(RDO_LAMBDA * 256))
        else:
            keep, lam = np.zeros(0, np.int32), 0
        try:
            stream = eng.seq_encode_into(sym, shp, rdo, keep, lam, self.format)  # sym becomes the final symbols
        except ValueError as exc:
            raise CodecError(f"cannot code this image: {exc}") from None
        del rdo
        side = eng.seq_offsets(x, height, width, LEVELS, dbl, steps, m.rounding, sym)
        if self.format >= 1:
            params = None
            if original is not None and self.loop_filter is not None:
                offs = np.frombuffer(side, np.uint8).reshape(-1, 2)
                y = self.reconstruct(sym, offs, height, width, quality, weights)
                lam_px = RDO_LAMBDA * self.quality_step(quality) ** 2  # squared error per bit, pixel domain
                params = loopfilter.fit(y, original, lam_px, **self.loop_filter)
            side += _encode_weights(weights, (len(band_shapes(height, width)) - 1) // 3) + loopfilter.encode_params(params)
        crc = struct.pack("<I", zlib.crc32(_little_endian(sym), zlib.crc32(side)) & 0xFFFFFFFF)
        return bytes([self.format]) + side + crc + stream, sym

    def _encode(self, state, height: int, width: int, quality: int) -> bytes:
        if not isinstance(state, _Analysis):
            return self.encode_symbols(state, height, width, quality)[0]
        original = state.original() if self.format >= 1 and self.loop_filter is not None else None
        return self.encode_symbols(state.coefficients(quality), height, width, quality, original)[0]

    def read_symbols(self, payload: bytes, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(symbols in coding order, per band (offset 1, offset >= 2)) of a payload, every check applied."""
        return self.read_payload(payload, height, width)[:2]

    def read_payload(self, payload: bytes, height: int, width: int):
        """(symbols, offsets, loop filter parameters or None, band step weights or None) of a
        payload, every check applied."""
        shapes = band_shapes(height, width)
        head = 1 + 2 * len(shapes)
        if len(payload) < head + 4 or payload[0] not in FORMATS:
            raise BitstreamError("sequential wavelet payload is truncated or of an unknown format")
        offs = np.frombuffer(payload[1:head], dtype=np.uint8).reshape(-1, 2)
        params, weights = None, None
        if payload[0] >= 1:
            weights, head = _decode_weights(payload, head, (len(shapes) - 1) // 3)
            params, head = loopfilter.decode_params(payload, head)
        head += 4
        if len(payload) < head:
            raise BitstreamError("sequential wavelet payload is truncated or of an unknown format")
        side = payload[1 : head - 4]
        crc = payload[head - 4 : head]
        shp = np.asarray(shapes, dtype=np.int32).ravel()
        try:
            raw = engine().seq_decode(payload[head:], shp.tobytes(), payload[0])
        except ValueError as exc:
            raise BitstreamError(f"entropy-coded payload rejected: {exc}") from None
        sym = np.frombuffer(raw, dtype=np.int32)
        if struct.pack("<I", zlib.crc32(raw, zlib.crc32(side)) & 0xFFFFFFFF) != crc:
            raise BitstreamError("entropy-coded payload did not decode cleanly (corrupted)")
        return sym, offs, params, weights

    def _decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        sym, offs, params, weights = self.read_payload(payload, height, width)
        x = self.reconstruct(sym, offs, height, width, quality, weights)
        if params is not None:
            x = loopfilter.apply(x, params)
        x /= x.dtype.type(PIXEL_SCALE)
        return x

    def reconstruct(self, sym: np.ndarray, offs: np.ndarray, height: int, width: int, quality: int, weights=None) -> np.ndarray:
        """Dequantized, inverse-transformed pixels on the 0..255 scale (a new array; the inverse
        transform runs in place on it): float32 for qualities 1..16, exactly as before; float64 above."""
        m = self.model
        eng = engine()
        dbl = quality > NUM_QUALITIES
        x = np.empty((height, width), dtype=np.float64 if dbl else np.float32)
        eng.seq_dequantize(sym, height, width, LEVELS, dbl, band_steps(self, quality, height, width, weights), m.rounding, offs, x)
        eng.wt_inverse(x, height, width, LEVELS, dbl)
        return x
