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
as 0 when the squared error it would save is worth less than ``RDO_LAMBDA``
squared steps per bit of its cost under the coder's *current* adaptive
probabilities (the decoder sees the decision, as later contexts do).

Payload (inside the usual ``RSLC`` container)::

    1 byte    format (0)
    2 x B     per band, the reconstruction offsets of magnitude 1 and of
              magnitudes >= 2 within their bin, in 1/256 of a step (uint8)
    4 bytes   CRC-32 of the offsets, then the decoded symbols (int32, little-endian, coding order)
    ...       the engine's coefficient stream

Everything the decoder does up to the symbols is integer arithmetic; the
dequantization and inverse transform are float and touch only pixels.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from radseal.codec import wavelet
from radseal.codec.api import Codec, normalized
from radseal.codec.errors import BitstreamError, CodecError
from radseal.codec.subband import LEVELS, NUM_QUALITIES, PIXEL_SCALE, SubbandModel, quantize

MODEL_ID = "rsc3-cdf97-seq"
FORMAT = 0
#: qualities of this coder: rsc2's 16, then the same geometric step ladder on to near-lossless
NUM_SEQ_QUALITIES = 46
#: the engine codes magnitudes below 2^24; a symbol is clipped there (only a constructed image of
#: full-range extremes at the top qualities could reach it: see tests/test_native_lossy.py)
SYMBOL_LIMIT = (1 << 24) - 1
#: squared quantizer steps per bit (the high-rate value 2 ln 2 / 12 = 0.116 is what rsc2 uses)
RDO_LAMBDA = 0.116


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


def unflatten(flat: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    out, pos = [], 0
    for h, w in shapes:
        out.append(flat[pos : pos + h * w].reshape(h, w))
        pos += h * w
    return out


def _offsets(u: np.ndarray, sym: np.ndarray, rounding: float) -> tuple[int, int]:
    """Mean position of |c| / step inside its bin, for magnitude 1 and for >= 2, in 1/256 (0..255)."""
    mag = np.abs(sym)
    res = []
    for sel in (mag == 1, mag >= 2):
        if sel.any():
            t = float(np.mean(u[sel] - (mag[sel] - rounding)))
            res.append(int(np.clip(round(t * 256), 0, 255)))
        else:
            res.append(int(round(rounding * 256)))
    return res[0], res[1]


class _Analysis:
    """The stored values, analysed on demand: in float32 from 0..1 (qualities 1..16, as rsc2
    does) and in float64 from the stored values (the qualities above)."""

    def __init__(self, model: SubbandModel, pixels: np.ndarray, low: int, high: int):
        self.model, self.pixels, self.low, self.high = model, pixels, low, high
        self._f32 = self._f64 = None

    def pyramid(self, quality: int) -> wavelet.Pyramid:
        if quality <= NUM_QUALITIES:
            if self._f32 is None:
                self._f32 = self.model.analyse(normalized(self.pixels, self.low, self.high))
            return self._f32
        if self._f64 is None:
            scale = PIXEL_SCALE / float(max(self.high - self.low, 1))
            self._f64 = wavelet.forward((self.pixels.astype(np.float64) - self.low) * scale, LEVELS)
        return self._f64


class SeqCodec(Codec):
    """The sequential wavelet coder as a :class:`~radseal.codec.api.Codec`."""

    family = "seq"
    num_qualities = NUM_SEQ_QUALITIES

    def __init__(self, model: SubbandModel, model_id: str = MODEL_ID, info: dict | None = None, rdo: bool = True):
        super().__init__(model_id, info)
        self.model = model
        self.rdo = rdo

    @classmethod
    def from_state(cls, state, model_id: str, info: dict | None = None) -> "SeqCodec":
        return cls(SubbandModel(state), model_id, info)

    def _analyse(self, x01: np.ndarray):
        return self.model.analyse(x01)

    def _analyse_image(self, pixels: np.ndarray, low: int, high: int) -> _Analysis:
        return _Analysis(self.model, pixels, low, high)

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

    def quantize(self, coeffs: wavelet.Pyramid, quality: int) -> wavelet.Pyramid:
        if quality <= NUM_QUALITIES:
            return self.model.quantize(coeffs, quality)
        ll_step, steps = self.band_steps(quality, len(coeffs.details))
        lim = SYMBOL_LIMIT
        return wavelet.Pyramid(
            ll=np.clip(np.rint(coeffs.ll / ll_step), -lim, lim).astype(np.int64),
            details=[{o: np.clip(quantize(d[o], s[o], self.model.rounding), -lim, lim) for o in d}
                     for d, s in zip(coeffs.details, steps)],
        )

    def encode_symbols(self, coeffs: wavelet.Pyramid, height: int, width: int, quality: int) -> tuple[bytes, np.ndarray]:
        """(payload, final symbols in coding order) for one quality."""
        m = self.model
        q = self.quantize(coeffs, quality)
        ll_step, steps = self.band_steps(quality, len(coeffs.details))
        shapes = band_shapes(height, width)
        sym = flatten(q)
        # |c| / step of every coefficient (1/256), and per band the dead-zone quantizer's offsets
        u_parts = [np.zeros(q.ll.size, dtype=np.float64)]
        for d, s in zip(coeffs.details, steps):
            for o in wavelet.ORIENTATIONS:
                u_parts.append(np.abs(d[o]).ravel().astype(np.float64) / s[o])
        u = np.concatenate(u_parts)
        bands_u = unflatten(u, shapes)
        keep = np.zeros(len(shapes), dtype=np.int32)
        for b, (bu, bs) in enumerate(zip(bands_u, unflatten(sym, shapes))):
            if b:
                keep[b] = int(round((1.0 - m.rounding) * 256)) + _offsets(bu, bs, m.rounding)[0]
        eng = engine()
        shp = np.asarray(shapes, dtype=np.int32).ravel()
        if self.rdo and RDO_LAMBDA > 0:
            rdo = np.minimum(np.rint(u * 256), 1 << 20).astype(np.int32)
            lam = int(round(RDO_LAMBDA * 256))
        else:
            rdo, keep_b, lam = np.zeros(0, np.int32), np.zeros(0, np.int32), 0
        try:
            stream, final = eng.seq_encode(sym.tobytes(), shp.tobytes(), rdo.tobytes(), (keep if rdo.size else keep_b).tobytes(), lam)
        except ValueError as exc:
            raise CodecError(f"cannot code this image: {exc}") from None
        final = np.frombuffer(final, dtype=np.int32)
        offs = bytearray()
        for b, (bu, bs) in enumerate(zip(bands_u, unflatten(final, shapes))):
            offs += bytes(_offsets(bu, bs, m.rounding)) if b else bytes(2)
        crc = struct.pack("<I", zlib.crc32(final.astype("<i4").tobytes(), zlib.crc32(bytes(offs))) & 0xFFFFFFFF)
        return bytes([FORMAT]) + bytes(offs) + crc + stream, final

    def _encode(self, state, height: int, width: int, quality: int) -> bytes:
        coeffs = state.pyramid(quality) if isinstance(state, _Analysis) else state
        return self.encode_symbols(coeffs, height, width, quality)[0]

    def read_symbols(self, payload: bytes, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(symbols in coding order, per band (offset 1, offset >= 2)) of a payload, every check applied."""
        shapes = band_shapes(height, width)
        head = 1 + 2 * len(shapes) + 4
        if len(payload) < head or payload[0] != FORMAT:
            raise BitstreamError("sequential wavelet payload is truncated or of an unknown format")
        offs = np.frombuffer(payload[1 : 1 + 2 * len(shapes)], dtype=np.uint8).reshape(-1, 2)
        crc = payload[head - 4 : head]
        shp = np.asarray(shapes, dtype=np.int32).ravel()
        try:
            raw = engine().seq_decode(payload[head:], shp.tobytes())
        except ValueError as exc:
            raise BitstreamError(f"entropy-coded payload rejected: {exc}") from None
        sym = np.frombuffer(raw, dtype=np.int32)
        if struct.pack("<I", zlib.crc32(raw, zlib.crc32(offs.tobytes())) & 0xFFFFFFFF) != crc:
            raise BitstreamError("entropy-coded payload did not decode cleanly (corrupted)")
        return sym, offs

    def _decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        sym, offs = self.read_symbols(payload, height, width)
        m = self.model
        shapes = band_shapes(height, width)
        bands = unflatten(sym, shapes)
        nlev = (len(shapes) - 1) // 3
        ll_step, steps = self.band_steps(quality, nlev)
        ft = np.float32 if quality <= NUM_QUALITIES else np.float64  # 1..16: exactly as before
        rnd = ft(m.rounding)
        details = []
        for i in range(nlev):
            out = {}
            for oi, o in enumerate(wavelet.ORIENTATIONS):
                b = 1 + 3 * i + oi
                s = bands[b]
                mag = np.abs(s)
                theta = np.where(mag == 1, ft(offs[b, 0] / 256.0), ft(offs[b, 1] / 256.0))
                level = (mag.astype(ft) - rnd + theta) * ft(steps[i][o])
                out[o] = np.where(mag > 0, np.copysign(level, s), ft(0)).astype(ft)
            details.append(out)
        ll = (bands[0].astype(np.float64) * ll_step).astype(ft)
        return wavelet.inverse(wavelet.Pyramid(ll=ll, details=details)) / PIXEL_SCALE
