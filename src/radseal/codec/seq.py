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

Encoder-side rate-distortion choice: a coefficient quantized to +-1 is coded
as 0, and a magnitude >= 2 is lowered by one, when the squared error it would
save is worth less than ``RDO_LAMBDA`` squared steps per bit of its cost under
the coder's *current* adaptive probabilities (the decoder sees the decision,
as later contexts do).

Format 1 (what the encoder writes) adds, in the engine, an adaptive
probability map after the mixer (its context includes the brightness of the
low-pass band), and in the payload optional per-level step weights and a
least-squares loop filter applied after the inverse transform
(:mod:`radseal.codec.loopfilter`).

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
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from radseal.codec import loopfilter, wavelet
from radseal.codec.api import Codec
from radseal.codec.errors import BitstreamError, CodecError
from radseal.codec.subband import LEVELS, NUM_QUALITIES, PIXEL_SCALE, SubbandModel, quantize

MODEL_ID = "rsc3-cdf97-seq"
#: the payload format the encoder writes; FORMATS are those the decoder reads
FORMAT = 1
FORMATS = (0, 1)
#: loop filter options (loopfilter.fit's keywords); None: no filter (format 0 has none)
LOOP_FILTER: dict | None = {}
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


def _weighted_steps(m: SubbandModel, quality: int, nlev: int, weights):
    """The model's steps, each detail level's (and the low-pass band's, by the coarsest level's)
    multiplied by the signalled weight; ``weights`` is a tuple (finest first) or the field's bytes."""
    ll_step, steps = m.band_steps(quality, nlev)
    if weights is None or nlev == 0:
        return ll_step, steps
    w = [b / 64.0 for b in (weights if isinstance(weights, bytes) else _weights_bytes(weights, nlev))]
    return ll_step * w[0], [{o: v * w[i] for o, v in s.items()} for i, s in enumerate(steps)]


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


class SeqCodec(Codec):
    """The sequential wavelet coder as a :class:`~radseal.codec.api.Codec`."""

    family = "seq"
    num_qualities = NUM_QUALITIES

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

    def _analyse(self, x01: np.ndarray):
        return _State(self.model.analyse(x01), x01)

    def encode_symbols(self, coeffs: wavelet.Pyramid, height: int, width: int, quality: int,
                       x01: np.ndarray | None = None) -> tuple[bytes, np.ndarray]:
        """(payload, final symbols in coding order) for one quality; with the original pixels
        ``x01`` (0..1) the loop filter is fitted and sent."""
        m = self.model
        weights = self.band_weights if self.format >= 1 else None
        ll_step, steps = _weighted_steps(m, quality, len(coeffs.details), weights)
        if weights is None:
            q = m.quantize(coeffs, quality)
        else:
            q = wavelet.Pyramid(
                ll=np.rint(coeffs.ll / ll_step).astype(np.int64),
                details=[{o: quantize(d[o], s[o], m.rounding) for o in d} for d, s in zip(coeffs.details, steps)],
            )
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
        keep2 = np.zeros(len(shapes), dtype=np.int32)  # reconstruction of m >= 2, minus m
        for b, (bu, bs) in enumerate(zip(bands_u, unflatten(sym, shapes))):
            if b:
                o1, o2 = _offsets(bu, bs, m.rounding)
                keep[b] = int(round((1.0 - m.rounding) * 256)) + o1
                keep2[b] = int(round(-m.rounding * 256)) + o2
        if self.rdo_levels:  # the engine may also lower magnitudes >= 2 by one
            keep = np.concatenate([keep, keep2])
        eng = engine()
        shp = np.asarray(shapes, dtype=np.int32).ravel()
        if self.rdo and RDO_LAMBDA > 0:
            rdo = np.minimum(np.rint(u * 256), 1 << 20).astype(np.int32)
            lam = int(round(RDO_LAMBDA * 256))
        else:
            rdo, keep_b, lam = np.zeros(0, np.int32), np.zeros(0, np.int32), 0
        try:
            stream, final = eng.seq_encode(sym.tobytes(), shp.tobytes(), rdo.tobytes(), (keep if rdo.size else keep_b).tobytes(), lam, self.format)
        except ValueError as exc:
            raise CodecError(f"cannot code this image: {exc}") from None
        final = np.frombuffer(final, dtype=np.int32)
        offs = bytearray()
        for b, (bu, bs) in enumerate(zip(bands_u, unflatten(final, shapes))):
            offs += bytes(_offsets(bu, bs, m.rounding)) if b else bytes(2)
        side = bytes(offs)
        fmt = self.format
        if fmt >= 1:
            params = None
            if x01 is not None and self.loop_filter is not None:
                y = self.reconstruct(final, np.frombuffer(side, np.uint8).reshape(-1, 2), height, width, quality, weights)
                lam = RDO_LAMBDA * float(m.steps[quality - 1]) ** 2  # squared error per bit, pixel domain
                params = loopfilter.fit(y, x01.astype(np.float32) * np.float32(PIXEL_SCALE), lam, **self.loop_filter)
            side += _encode_weights(weights, len(coeffs.details)) + loopfilter.encode_params(params)
        crc = struct.pack("<I", zlib.crc32(final.astype("<i4").tobytes(), zlib.crc32(side)) & 0xFFFFFFFF)
        return bytes([fmt]) + side + crc + stream, final

    def _encode(self, state, height: int, width: int, quality: int) -> bytes:
        if isinstance(state, _State):
            return self.encode_symbols(state.coeffs, height, width, quality, state.x01)[0]
        return self.encode_symbols(state, height, width, quality)[0]

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
        y = self.reconstruct(sym, offs, height, width, quality, weights)
        return loopfilter.apply(y, params) / PIXEL_SCALE

    def reconstruct(self, sym: np.ndarray, offs: np.ndarray, height: int, width: int, quality: int, weights=None) -> np.ndarray:
        """Dequantized, inverse-transformed pixels on the 0..255 scale (before the loop filter)."""
        m = self.model
        shapes = band_shapes(height, width)
        bands = unflatten(sym, shapes)
        nlev = (len(shapes) - 1) // 3
        ll_step, steps = _weighted_steps(m, quality, nlev, weights)
        rnd = np.float32(m.rounding)
        details = []
        for i in range(nlev):
            out = {}
            for oi, o in enumerate(wavelet.ORIENTATIONS):
                b = 1 + 3 * i + oi
                s = bands[b]
                mag = np.abs(s)
                theta = np.where(mag == 1, np.float32(offs[b, 0] / 256.0), np.float32(offs[b, 1] / 256.0))
                level = (mag.astype(np.float32) - rnd + theta) * np.float32(steps[i][o])
                out[o] = np.where(mag > 0, np.copysign(level, s), np.float32(0)).astype(np.float32)
            details.append(out)
        ll = (bands[0].astype(np.float64) * ll_step).astype(np.float32)
        return wavelet.inverse(wavelet.Pyramid(ll=ll, details=details))


class _State:
    """What ``_analyse`` keeps for every quality: the transform and the pixels (for the loop filter)."""

    __slots__ = ("coeffs", "x01")

    def __init__(self, coeffs: wavelet.Pyramid, x01: np.ndarray):
        self.coeffs, self.x01 = coeffs, x01
