"""The wavelet codec's engine: quantized CDF 9/7 subbands, coded with a learned context model.

Pixels (scaled to 0..255) go through a 6-level CDF 9/7 transform; each band
is quantized with a dead-zone quantizer whose step is the quality's step
divided by the band's synthesis gain (so every band costs the same squared
error per step). The symbols are coded in the order and with the contexts of
:mod:`radseal.codec.context`: a learned additive model maps each
coefficient's integer features to one of ``NUM_SCALES`` probability tables,
and the tables themselves are learned histograms. The decoder puts each
nonzero coefficient back at its table's learned centroid, not the middle of
its bin. What is learned, and how, is in :mod:`radseal.codec.subband_fit`.

Determinism: table choice and tables are integers; the transform is float
but only ever touches pixels. The low-pass band is coded as row-wise
differences (decoded by a cumulative sum) with a per-image table choice.
Magnitudes past a table's edge are escaped and sent as Exp-Golomb numbers.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from radseal.codec import bitstream, context, wavelet
from radseal.codec.api import Codec, normalized
from radseal.codec.errors import BitstreamError, CodecError, WeightsError
from radseal.image import Image

LEVELS = 6
NUM_QUALITIES = 16
NUM_SCALES = 96
SIGMA_MIN = 0.02
SIGMA_MAX = 512.0
INDEX_FRAC_BITS = 4  # the model's sums are in 1/16 of a table step
PRECISION = 24
MAX_HALF = 4096
ESCAPE_BITS = 26  # Exp-Golomb prefix range: escaped magnitudes below 2**26
NUM_CLASSES = LEVELS * 3 * len(context.PHASES)
PIXEL_SCALE = 255.0
INTENSITY_BUCKETS = 16
#: Encoder-only rate-distortion trade-off, in squared quantizer steps per bit. High-rate theory
#: for an entropy-coded uniform quantizer gives 2 ln 2 / 12 = 0.116.
RDO_LAMBDA = 0.116


def intensity_edges(steps: np.ndarray) -> np.ndarray:
    """Per quality, the low-pass symbol values where the brightness bucket steps up (integers,
    so that the decoder needs no float to find a bucket). The low-pass band has unit DC gain."""
    ll_norm, _ = wavelet.synthesis_norms(LEVELS)
    grey = np.arange(1, INTENSITY_BUCKETS) * (PIXEL_SCALE + 1) / INTENSITY_BUCKETS
    return np.ceil(grey[None, :] / (np.asarray(steps)[:, None] / ll_norm)).astype(np.int64)


def sigma_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SIGMA_MIN), math.log(SIGMA_MAX), NUM_SCALES))


def class_id(level_from_finest: int, orientation: int, phase: int) -> int:
    return (min(level_from_finest, LEVELS - 1) * 3 + orientation) * len(context.PHASES) + phase


def half_widths() -> np.ndarray:
    return np.minimum(np.ceil(sigma_table() * 10.0).astype(np.int64) + 2, MAX_HALF)


def quality_steps(step_max: float, step_min: float) -> np.ndarray:
    return step_max * (step_min / step_max) ** (np.arange(NUM_QUALITIES) / (NUM_QUALITIES - 1))


def quantize(c: np.ndarray, step: float, rounding: float) -> np.ndarray:
    # int32: magnitudes stay far below 2**31 for any 16-bit image at any quality.
    return (np.sign(c) * np.floor(np.abs(c) / step + rounding)).astype(np.int32)


def _categorical(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64) / float(1 << PRECISION), perfect=False)


def _uniform(n: int):
    import constriction

    return constriction.stream.model.Uniform(int(n))


def _escape_prefix_counts() -> np.ndarray:
    """A fixed, geometric table for the Exp-Golomb prefix (escapes are rare)."""
    from radseal.codec.entropy import quantize_pmf

    return quantize_pmf(0.5 ** np.arange(1, ESCAPE_BITS + 1), PRECISION)


class SubbandModel:
    """Learned parameters of one wavelet-codec model, ready to code."""

    def __init__(self, state: dict[str, np.ndarray]):
        try:
            self.weights = np.asarray(state["ctx.weights"], dtype=np.int64)
            self.bias = np.asarray(state["ctx.bias"], dtype=np.int64)
            self.counts = np.asarray(state["tables.counts"], dtype=np.int64)
            self.half = np.asarray(state["tables.half"], dtype=np.int64)
            self.centroids = np.asarray(state["recon.centroids"], dtype=np.float64)
            self.steps = np.asarray(state["quant.steps"], dtype=np.float64)
            self.rounding = float(np.asarray(state["quant.rounding"]).reshape(()))
            self.intensity_edges = np.asarray(state["ctx.intensity_edges"], dtype=np.int64)
        except KeyError as exc:
            raise WeightsError(f"wavelet codec weights lack {exc}") from None
        shape_ok = (
            self.weights.shape == (NUM_CLASSES, context.NUM_FEATURES, context.NUM_BUCKETS)
            and self.bias.shape == (NUM_CLASSES,)
            and self.half.shape == (NUM_SCALES,)
            and self.counts.shape == (NUM_SCALES, 2 * MAX_HALF + 1)
            and self.centroids.shape == (NUM_SCALES, 2)
            and self.steps.shape == (NUM_QUALITIES,)
            and self.intensity_edges.shape == (NUM_QUALITIES, INTENSITY_BUCKETS - 1)
        )
        if not shape_ok:
            raise WeightsError("wavelet codec weights do not match the model layout (array shapes differ)")
        if (self.half < 1).any() or (self.half > MAX_HALF).any():
            raise WeightsError("wavelet codec weights have invalid table widths")
        for k, h in enumerate(self.half):
            row = self.counts[k, : 2 * h + 1]
            if row.min() < 1 or int(row.sum()) != 1 << PRECISION:
                raise WeightsError(f"wavelet codec table {k} is not a valid probability table")
        # int32 is exact here: |sum| <= NUM_FEATURES * max|weight| + |bias|, far below 2**31.
        if np.abs(self.weights).max(initial=0) > 1 << 20 or np.abs(self.bias).max(initial=0) > 1 << 20:
            raise WeightsError("wavelet codec context weights are out of range")
        self._flat = self.weights.reshape(NUM_CLASSES, -1).astype(np.int32)
        self._centroids32 = self.centroids.astype(np.float32)
        self._bias32 = self.bias.astype(np.int32)
        self._offsets = (np.arange(context.NUM_FEATURES, dtype=np.int32) * context.NUM_BUCKETS)[:, None, None]
        self._models = [_categorical(self.counts[k, : 2 * h + 1]) for k, h in enumerate(self.half)]
        # Encoder-side costs (bits) of coding 0 and +-1 under each table, for the rate-distortion pass.
        rows = np.arange(NUM_SCALES)
        total = float(1 << PRECISION)
        self._bits_zero = -np.log2(self.counts[rows, self.half] / total)
        self._bits_one = -np.log2(self.counts[rows, self.half + 1] / total)
        self._prefix = _categorical(_escape_prefix_counts())
        self._ll_choice = _uniform(NUM_SCALES)
        ll_norm, detail_norms = wavelet.synthesis_norms(LEVELS)
        self._ll_norm = ll_norm
        self._detail_norms = detail_norms  # coarsest first, for a full LEVELS-level pyramid

    # -- parameters ---------------------------------------------------------------------
    def band_steps(self, quality: int, levels: int) -> tuple[float, list[dict[str, float]]]:
        return self.band_steps_at(float(self.steps[quality - 1]), levels)

    def band_steps_at(self, base: float, levels: int) -> tuple[float, list[dict[str, float]]]:
        """(low-pass step, per level coarsest first the detail steps) for quality step ``base``."""
        norms = self._detail_norms[LEVELS - levels :]
        return base / self._ll_norm, [{o: base / n[o] for o in wavelet.ORIENTATIONS} for n in norms]

    def table_index(self, features: np.ndarray, cls: int) -> np.ndarray:
        """Integer sum of the class's per-bucket weights -> table index (exact on any machine)."""
        s = np.take(self._flat[cls], features + self._offsets).sum(axis=0, dtype=np.int32) + self._bias32[cls]
        return np.clip((s + (1 << (INDEX_FRAC_BITS - 1))) >> INDEX_FRAC_BITS, 0, NUM_SCALES - 1).astype(np.int64)

    # -- scan shared by encoder and decoder ---------------------------------------------
    def walk(self, height: int, width: int, quality: int, ll: np.ndarray, code_unit) -> tuple[wavelet.Pyramid, list[dict[str, np.ndarray]]]:
        """Visit every detail coding unit in decoder order; ``code_unit(idx, level, orient, phase)``
        returns the integer symbols of that unit, which later contexts then see. ``ll`` is the
        (already decoded) low-pass band.

        Returns the symbols and, per band, the table index of every coefficient."""
        ll_shape, sizes = wavelet.band_shapes(height, width, LEVELS)
        nlev = len(sizes)
        brightness = np.searchsorted(self.intensity_edges[quality - 1], ll, side="right").astype(np.int32)
        details: list[dict[str, np.ndarray]] = []
        indices: list[dict[str, np.ndarray]] = []
        for i, (lo_r, hi_r, lo_c, hi_c) in enumerate(sizes):
            shapes = {"hl": (lo_r, hi_c), "lh": (hi_r, lo_c), "hh": (hi_r, hi_c)}
            bands: dict[str, np.ndarray] = {}
            band_idx: dict[str, np.ndarray] = {}
            for oi, o in enumerate(wavelet.ORIENTATIONS):
                # Narrow dtypes: a 4096 x 4096 image codes in about 0.8 GB instead of 1 GB.
                band = np.zeros(shapes[o], dtype=np.int32)
                band_idx[o] = np.zeros(shapes[o], dtype=np.int16)
                decoded_abs = np.zeros(shapes[o], dtype=np.int32)
                parent = np.abs(details[i - 1][o]) if i > 0 else None
                siblings = [np.abs(bands[s]) for s in wavelet.ORIENTATIONS[:oi]]
                # Level i (coarsest first) is 2**i times finer than the low-pass band.
                rows = np.minimum(np.arange(shapes[o][0]) >> i, ll_shape[0] - 1)
                cols = np.minimum(np.arange(shapes[o][1]) >> i, ll_shape[1] - 1)
                static = context.band_context(parent, siblings, shapes[o], brightness[np.ix_(rows, cols)])
                for ph, phase in enumerate(context.PHASES):
                    if 0 in context.phase_shape(shapes[o], phase):
                        continue
                    feats = context.phase_features(decoded_abs, static, quality - 1, phase)
                    idx = self.table_index(feats, class_id(nlev - 1 - i, oi, ph))
                    values = code_unit(idx, i, o, phase)
                    band[phase[0] :: 2, phase[1] :: 2] = values
                    band_idx[o][phase[0] :: 2, phase[1] :: 2] = idx
                    decoded_abs[phase[0] :: 2, phase[1] :: 2] = np.abs(values)
                bands[o] = band
            details.append(bands)
            indices.append(band_idx)
        return wavelet.Pyramid(ll=np.asarray(ll, dtype=np.int64), details=details), indices

    # -- encoder --------------------------------------------------------------------------
    def analyse(self, x01: np.ndarray) -> wavelet.Pyramid:
        # float32: twice as fast as float64 and far below a 16-bit grey level; only pixels see it.
        return wavelet.forward(x01.astype(np.float32) * np.float32(PIXEL_SCALE), LEVELS)

    def quantize(self, coeffs: wavelet.Pyramid, quality: int) -> wavelet.Pyramid:
        ll_step, steps = self.band_steps(quality, len(coeffs.details))
        return wavelet.Pyramid(
            ll=np.rint(coeffs.ll / ll_step).astype(np.int64),
            details=[{o: quantize(d[o], s[o], self.rounding) for o in d} for d, s in zip(coeffs.details, steps)],
        )

    def encode(self, coeffs: wavelet.Pyramid, height: int, width: int, quality: int) -> bytes:
        import constriction

        q, ops = self.choose_symbols(coeffs, height, width, quality)
        coder = constriction.stream.stack.AnsCoder()
        for symbols, model in reversed(ops):
            coder.encode_reverse(symbols, model)
        return coder.get_compressed().astype("<u4").tobytes() + symbols_checksum(q)

    def choose_symbols(self, coeffs: wavelet.Pyramid, height: int, width: int, quality: int):
        """(symbol pyramid, coding operations in decoder order) for one quality.

        Dead-zone quantization, then a rate-distortion pass: a magnitude-1 symbol whose table makes
        it expensive (a quiet context) is dropped to 0 when the squared error that it saves is worth
        less than ``RDO_LAMBDA`` x step^2 per bit. Later contexts see the decision, as the decoder will.
        """
        q = self.quantize(coeffs, quality)
        _, steps = self.band_steps(quality, len(coeffs.details))
        ops: list[tuple[np.ndarray, object]] = []
        ops += self._ll_ops(q.ll)

        def code_unit(idx, i, o, phase):
            sl = (slice(phase[0], None, 2), slice(phase[1], None, 2))
            values = q.details[i][o][sl]
            ones = np.abs(values) == 1
            if RDO_LAMBDA > 0 and ones.any():
                k = idx[ones]
                u = np.abs(coeffs.details[i][o][sl][ones]).astype(np.float64) / steps[i][o]
                kept_at = 1.0 - self.rounding + self.centroids[k, 0]
                saved = u * u - (u - kept_at) ** 2
                drop = saved < RDO_LAMBDA * (self._bits_one[k] - self._bits_zero[k])
                if drop.any():
                    values = values.copy()
                    where = np.nonzero(ones)
                    values[where[0][drop], where[1][drop]] = 0
                    q.details[i][o][sl] = values
            ops.extend(self._unit_ops(values.ravel(), idx.ravel()))
            return values

        self.walk(height, width, quality, q.ll, code_unit)
        return q, ops

    def _unit_ops(self, values: np.ndarray, idx: np.ndarray) -> list:
        half = self.half[idx]
        sym = (np.clip(values, -half, half) + half).astype(np.int32)
        ops = []
        for k, positions in _groups(idx):
            ops.append((sym[positions], self._models[k]))
        escaped = np.abs(values) >= half
        if escaped.any():
            ops += self._escape_ops(np.abs(values[escaped]) - half[escaped])
        return ops

    def _escape_ops(self, excess: np.ndarray) -> list:
        v = excess.astype(np.int64) + 1
        nbits = np.floor(np.log2(v)).astype(np.int64)  # exact for integers below 2**52
        nbits += (v >> (nbits + 1)) > 0  # guard against log2 rounding up/down at powers of two
        nbits -= (v >> nbits) == 0
        if (nbits >= ESCAPE_BITS).any():
            raise CodecError("a coefficient is too large to code (image values out of range?)")
        ops = [(nbits.astype(np.int32), self._prefix)]
        for n in np.unique(nbits):
            if n > 0:
                sel = nbits == n
                ops.append(((v[sel] - (1 << int(n))).astype(np.int32), _uniform(1 << int(n))))
        return ops

    def _ll_ops(self, ll: np.ndarray) -> list:
        diffs = np.diff(ll, axis=1, prepend=0)
        diffs[1:, 0] = np.diff(ll[:, 0])
        spread = np.abs(diffs).mean() if diffs.size else 0.0
        choice = int(np.clip(np.searchsorted(sigma_table(), max(spread, 1e-9)), 0, NUM_SCALES - 1))
        ops = [(np.array([choice], dtype=np.int32), self._ll_choice)]
        return ops + self._unit_ops(diffs.ravel(), np.full(diffs.size, choice, dtype=np.int64))

    # -- decoder --------------------------------------------------------------------------
    def decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        """Symbols from ``payload`` -> pixels scaled to 0..1 (float)."""
        q, indices = self.read_symbols(payload, height, width, quality)
        return self.reconstruct(q, indices, quality) / PIXEL_SCALE

    def read_symbols(self, payload: bytes, height: int, width: int, quality: int):
        """(symbol pyramid, per-band table indices) from a payload, every check applied."""
        import constriction

        if len(payload) % 4 or len(payload) < 8:
            raise BitstreamError("entropy-coded payload is not a whole number of 32-bit words plus its checksum")
        words, checksum = payload[:-4], payload[-4:]
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        except Exception as exc:
            raise BitstreamError(f"entropy-coded payload rejected: {exc}") from None
        try:
            q, indices = self.decode_symbols_from(coder, height, width, quality)
            clean = coder.is_empty()
        except BitstreamError:
            raise
        except Exception as exc:  # constriction refuses a payload it cannot parse
            raise BitstreamError(f"entropy decoding failed: {exc}") from None
        # An ANS stream damaged in a way the outer CRC did not catch (a forged stream) usually
        # leaves the coder non-empty; the symbol checksum catches the rest.
        if not clean or symbols_checksum(q) != checksum:
            raise BitstreamError("entropy-coded payload did not decode cleanly (corrupted, or made with other weights)")
        return q, indices

    def decode_symbols_from(self, coder, height: int, width: int, quality: int):
        """(symbol pyramid, per-band table indices) read from an open ANS coder."""
        ll_shape, _ = wavelet.band_shapes(height, width, LEVELS)
        ll = self._decode_ll(coder, ll_shape)

        def code_unit(idx, i, o, phase):
            return self._decode_unit(coder, idx.ravel()).reshape(idx.shape)

        q, indices = self.walk(height, width, quality, ll, code_unit)
        q.ll = ll
        return q, indices

    def _decode_unit(self, coder, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(idx.size, dtype=np.int64)
        for k, positions in _groups(idx):
            out[positions] = coder.decode(self._models[k], positions.size).astype(np.int64) - self.half[k]
        half = self.half[idx]
        escaped = np.nonzero(np.abs(out) >= half)[0]
        if escaped.size:
            nbits = coder.decode(self._prefix, escaped.size).astype(np.int64)
            v = np.ones(escaped.size, dtype=np.int64) << nbits
            for n in np.unique(nbits):
                if n > 0:
                    sel = nbits == n
                    v[sel] += coder.decode(_uniform(1 << int(n)), int(sel.sum())).astype(np.int64)
            out[escaped] = np.sign(out[escaped]) * (half[escaped] + v - 1)
        return out

    def _decode_ll(self, coder, shape: tuple[int, int]) -> np.ndarray:
        choice = int(coder.decode(self._ll_choice, 1)[0])
        diffs = self._decode_unit(coder, np.full(shape[0] * shape[1], choice, dtype=np.int64)).reshape(shape)
        first = np.cumsum(diffs[:, 0])
        diffs = diffs.copy()
        diffs[:, 0] = first
        return np.cumsum(diffs, axis=1)

    def reconstruct(self, q: wavelet.Pyramid, indices: list[dict[str, np.ndarray]], quality: int) -> np.ndarray:
        """Dequantize (each nonzero at its table's learned centroid) and invert the transform."""
        ll_step, steps = self.band_steps(quality, len(q.details))
        details = []
        for bands, idx, s in zip(q.details, indices, steps):
            out = {}
            for o, sym in bands.items():
                mag = np.abs(sym)
                theta = self._centroids32[idx[o], np.minimum(mag, 2) - 1]
                level = (mag.astype(np.float32) - np.float32(self.rounding) + theta) * np.float32(s[o])
                out[o] = np.where(mag > 0, np.copysign(level, sym), np.float32(0))
            details.append(out)
        return wavelet.inverse(wavelet.Pyramid(ll=(q.ll * ll_step).astype(np.float32), details=details))


def _groups(idx: np.ndarray):
    """(table, positions in order) for each table used, tables ascending: one sort, not one scan per table."""
    # uint8 keys (NUM_SCALES < 256) make numpy's stable sort a radix sort: linear, not n log n.
    order = np.argsort(idx.astype(np.uint8), kind="stable")
    counts = np.bincount(idx, minlength=NUM_SCALES)
    start = 0
    for k in np.nonzero(counts)[0]:
        n = int(counts[k])
        yield int(k), order[start : start + n]
        start += n


class SubbandCodec(Codec):
    """The wavelet codec family (``rsc2``) as a :class:`~radseal.codec.api.Codec`."""

    family = "subband"
    num_qualities = NUM_QUALITIES

    def __init__(self, model: SubbandModel, model_id: str, info: dict | None = None):
        super().__init__(model_id, info)
        self.model = model

    @classmethod
    def from_state(cls, state, model_id: str, info: dict | None = None) -> "SubbandCodec":
        return cls(SubbandModel(state), model_id, info)

    def _analyse(self, x01: np.ndarray):
        return self.model.analyse(x01)

    def _encode(self, coeffs, height: int, width: int, quality: int) -> bytes:
        return self.model.encode(coeffs, height, width, quality)

    def _decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        return self.model.decode(payload, height, width, quality)

    # -- checks ----------------------------------------------------------------------------
    def encoder_symbols(self, img: Image, quality: int) -> np.ndarray:
        """Every integer symbol :meth:`compress` writes for ``img``, flattened in coding order."""
        low, high = int(img.pixels.min()), int(img.pixels.max())
        x = normalized(img.pixels, low, high)
        q, _ = self.model.choose_symbols(self.model.analyse(x), img.height, img.width, quality)
        return _flatten(q)

    def decode_symbols(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(symbols, table indices) of a stream, flattened in coding order, without the synthesis."""
        header, payload = bitstream.unpack(data)
        q, indices = self.model.read_symbols(payload, header.height, header.width, header.quality)
        flat_idx = np.concatenate([b[o].ravel() for b in indices for o in wavelet.ORIENTATIONS]) if indices else np.zeros(0, np.int64)
        return _flatten(q), flat_idx


def symbols_checksum(q: wavelet.Pyramid) -> bytes:
    """CRC-32 of every symbol in coding order (as little-endian int32), appended to the payload."""
    import zlib

    return struct.pack("<I", zlib.crc32(_flatten(q).astype("<i4").tobytes()) & 0xFFFFFFFF)


def _flatten(p: wavelet.Pyramid) -> np.ndarray:
    parts = [p.ll.ravel()] + [b[o].ravel() for b in p.details for o in wavelet.ORIENTATIONS]
    return np.concatenate(parts).astype(np.int64)
