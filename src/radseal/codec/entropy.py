"""Integer probability tables and entropy coding with constriction's ANS coder.

Tables are built once from the trained model (``build_*_tables``) and stored
with the weights as integers: counts that sum to ``2**PRECISION`` with every
symbol at least 1. At coding time they are handed to constriction as exact
dyadic floats (count / 2**PRECISION); constriction's non-"perfect"
quantization of a float table uses only IEEE basic arithmetic, so encoder and
decoder derive the same integer model on any machine. (We do not use
constriction's QuantizedGaussian at coding time: it evaluates the Gaussian
CDF with transcendental functions whose last bit may differ between platform
math libraries.)

Symbols are grouped by table and each group is coded with one model, so the
Python overhead is one call per table, not per symbol:

* y (the latent): table = scale index from the integer hyper-synthesis,
  symbol = round(y - mean) clamped to the table's support;
* z (the hyper-latent): table = channel, symbol = round(z) clamped.

One ANS stack holds both; z is pushed last so that the decoder pops it first.
"""

from __future__ import annotations

import math

import numpy as np

from radseal.codec.errors import BitstreamError

PRECISION = 16
NUM_SCALES = 64
SCALE_MIN = 0.11
SCALE_MAX = 64.0
TAIL_SIGMAS = 7.0
Z_RANGE = 48  # hyper-latent symbols in [-Z_RANGE, Z_RANGE]


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))


def scale_thresholds_fixed(act_bits: int) -> np.ndarray:
    """Integer thresholds (fixed point) between neighbouring table scales (geometric midpoints)."""
    s = scale_table()
    mids = np.sqrt(s[:-1] * s[1:])
    return np.round(mids * (1 << act_bits)).astype(np.int64)


def scale_index(scale_fixed: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Table index of each predicted scale: integer comparison only."""
    return np.searchsorted(thresholds, scale_fixed, side="right").astype(np.int64)


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer counts summing to 2**precision, each >= 1, close to ``pmf``."""
    pmf = np.asarray(pmf, dtype=np.float64)
    pmf = np.maximum(pmf, 0) / pmf.sum()
    total = 1 << precision
    n = pmf.size
    if n > total // 2:
        raise ValueError("too many symbols for the table precision")
    counts = np.floor(pmf * (total - n)).astype(np.int64) + 1
    rest = total - int(counts.sum())
    # Hand the remainder to the largest fractional parts (deterministic order).
    frac = pmf * (total - n) - np.floor(pmf * (total - n))
    order = np.argsort(-frac, kind="stable")
    counts[order[:rest]] += 1
    assert int(counts.sum()) == total and counts.min() >= 1
    return counts


def gaussian_pmf(sigma: float, half_width: int) -> np.ndarray:
    """P(round(r) = k) for r ~ N(0, sigma), k in [-R, R]; the edges absorb the tails."""
    from scipy.special import ndtr

    k = np.arange(-half_width, half_width + 1, dtype=np.float64)
    upper = ndtr((k + 0.5) / sigma)
    lower = ndtr((k - 0.5) / sigma)
    upper[-1] = 1.0
    lower[0] = 0.0
    return upper - lower


def build_gaussian_tables() -> tuple[np.ndarray, np.ndarray]:
    """(counts padded to (NUM_SCALES, L), half widths (NUM_SCALES,))."""
    scales = scale_table()
    half = np.array([max(1, int(math.ceil(s * TAIL_SIGMAS))) for s in scales], dtype=np.int64)
    width = int(2 * half.max() + 1)
    counts = np.zeros((NUM_SCALES, width), dtype=np.int32)
    for i, s in enumerate(scales):
        c = quantize_pmf(gaussian_pmf(float(s), int(half[i])))
        counts[i, : c.size] = c
    return counts, half


def build_z_tables(z_density, channels: int) -> np.ndarray:
    """Counts (channels, 2*Z_RANGE+1) from the learned factorized density."""
    import torch

    k = torch.arange(-Z_RANGE, Z_RANGE + 1, dtype=torch.float64)
    with torch.no_grad():
        dens = z_density.double()
        v = k.view(1, 1, -1).repeat(channels, 1, 1)
        lower = torch.sigmoid(dens.logits_cdf(v - 0.5))
        upper = torch.sigmoid(dens.logits_cdf(v + 0.5))
        z_density.float()
    pmf = (upper - lower).squeeze(1).numpy()
    pmf[:, 0] += lower[:, 0, 0].numpy()  # tails into the edge bins
    pmf[:, -1] += 1.0 - upper[:, 0, -1].numpy()
    return np.stack([quantize_pmf(p) for p in pmf]).astype(np.int32)


def _model(counts: np.ndarray):
    import constriction

    probs = counts.astype(np.float64) / float(1 << PRECISION)
    return constriction.stream.model.Categorical(probs, perfect=False)


class TableSet:
    """The integer tables of one model, with their constriction models cached."""

    def __init__(self, y_counts: np.ndarray, y_half: np.ndarray, z_counts: np.ndarray):
        self.y_counts = np.asarray(y_counts, dtype=np.int64)
        self.y_half = np.asarray(y_half, dtype=np.int64)
        self.z_counts = np.asarray(z_counts, dtype=np.int64)
        self._y_models = [_model(self.y_counts[i, : 2 * h + 1]) for i, h in enumerate(self.y_half)]
        self._z_models = [_model(c) for c in self.z_counts]

    def encode(self, z_sym: np.ndarray, y_sym: np.ndarray, y_index: np.ndarray) -> bytes:
        """z_sym (C, h, w) in [-Z_RANGE, Z_RANGE]; y_sym (M, H, W) already clamped per index."""
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        flat_idx = y_index.reshape(-1)
        flat_sym = y_sym.reshape(-1)
        # Decoder order: z channels 0..C-1, then y groups 0..NUM_SCALES-1; a stack codes in reverse.
        for g in reversed(range(len(self._y_models))):
            sel = flat_sym[flat_idx == g]
            if sel.size:
                coder.encode_reverse((sel + self.y_half[g]).astype(np.int32), self._y_models[g])
        zc = z_sym.reshape(z_sym.shape[0], -1)
        for c in reversed(range(zc.shape[0])):
            coder.encode_reverse((zc[c] + Z_RANGE).astype(np.int32), self._z_models[c])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode_z(self, coder, shape: tuple[int, int, int]) -> np.ndarray:
        c, h, w = shape
        out = np.empty((c, h * w), dtype=np.int64)
        for i in range(c):
            out[i] = coder.decode(self._z_models[i], h * w).astype(np.int64) - Z_RANGE
        return out.reshape(c, h, w)

    def decode_y(self, coder, y_index: np.ndarray) -> np.ndarray:
        flat_idx = y_index.reshape(-1)
        out = np.zeros(flat_idx.size, dtype=np.int64)
        for g in range(len(self._y_models)):
            pos = np.nonzero(flat_idx == g)[0]
            if pos.size:
                out[pos] = coder.decode(self._y_models[g], pos.size).astype(np.int64) - self.y_half[g]
        return out.reshape(y_index.shape)

    @staticmethod
    def open_stream(payload: bytes):
        import constriction

        if len(payload) % 4:
            raise BitstreamError("entropy-coded payload is not a whole number of 32-bit words")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        if words.size == 0:
            raise BitstreamError("empty entropy-coded payload")
        try:
            return constriction.stream.stack.AnsCoder(words)
        except Exception as exc:  # constriction rejects some malformed word arrays outright
            raise BitstreamError(f"entropy-coded payload rejected: {exc}") from None
