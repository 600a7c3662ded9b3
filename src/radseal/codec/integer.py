"""Exact integer hyper-synthesis: the same scale indices and means on every machine.

With a hyperprior, the decoder picks the probability table of each latent
from the hyper-synthesis output. In floating point, a one-ulp difference
between the encoder's and the decoder's machine (another CPU, thread count,
BLAS, GPU) can move a value across a table boundary, pick another table and
desynchronise the entropy decoder for the rest of the stream (CompressAI
documents this; Balle et al., "Integer networks", ICLR 2019).

So at coding time ``h_s`` runs in fixed point:

* weights are integers ``round(w * 2**WEIGHT_BITS)``, biases integers at
  the accumulator's scale;
* activations are integers with ``ACT_BITS`` fractional bits; after each
  convolution the accumulator is floor-divided by a power of two, ReLU'd
  and clamped to ``+-ACT_LIMIT``;
* pixel shuffle is a permutation.

The products and sums are carried in float64 arrays holding integers, with
bounds checked so that every partial sum stays below 2**53: in that range
float64 addition and multiplication (with or without FMA, in any order or
blocking that a BLAS library chooses) are exact, so the result is the same
integer everywhere. :func:`run_int64` computes the same thing with numpy
int64 arithmetic as a reference (tests compare the two).
"""

from __future__ import annotations

import numpy as np

WEIGHT_BITS = 12
ACT_BITS = 8
ACT_LIMIT = 1 << 20
EXACT_LIMIT = float(1 << 53)


class IntegerHyperSynthesis:
    """Fixed-point twin of :class:`radseal.codec.model.HyperSynthesis`."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], shuffles: list[int]):
        self.weights = [np.asarray(w, dtype=np.int64) for w in weights]
        self.biases = [np.asarray(b, dtype=np.int64) for b in biases]
        self.shuffles = list(shuffles)
        for w in self.weights:
            cout, cin, kh, kw = w.shape
            worst = float(np.abs(w).reshape(cout, -1).sum(1).max()) * ACT_LIMIT * 2
            if worst >= EXACT_LIMIT:
                raise ValueError("integer hyper-synthesis weights too large for exact float64 accumulation")

    @classmethod
    def from_float(cls, h_s) -> "IntegerHyperSynthesis":
        """Quantize a trained float HyperSynthesis."""
        weights, biases = [], []
        for i, layer in enumerate(h_s.layers()):
            w = layer.weight.detach().double().cpu().numpy()
            b = layer.bias.detach().double().cpu().numpy()
            in_bits = 0 if i == 0 else ACT_BITS  # z enters as plain integers
            weights.append(np.round(w * (1 << WEIGHT_BITS)).astype(np.int64))
            biases.append(np.round(b * (1 << (WEIGHT_BITS + in_bits))).astype(np.int64))
        return cls(weights, biases, [2, 2, 0])

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"hs_int.{i}.weight"] = w.astype(np.int32)
            out[f"hs_int.{i}.bias"] = b.astype(np.int64)
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "IntegerHyperSynthesis":
        weights, biases = [], []
        i = 0
        while f"hs_int.{i}.weight" in state:
            weights.append(np.asarray(state[f"hs_int.{i}.weight"], dtype=np.int64))
            biases.append(np.asarray(state[f"hs_int.{i}.bias"], dtype=np.int64))
            i += 1
        return cls(weights, biases, [2, 2, 0][:i])

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: integer array (C, h, w) -> (mean, scale) as int64 with ACT_BITS fractional bits."""
        return self._run(z, exact_float=True)

    def run_int64(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same computation in int64 (slow reference)."""
        return self._run(z, exact_float=False)

    def _run(self, z: np.ndarray, exact_float: bool) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(z, dtype=np.int64)
        if np.abs(x).max(initial=0) >= ACT_LIMIT:
            raise ValueError("hyper-latent out of range")
        in_bits = 0
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            acc = _conv_same(x, w, exact_float) + b[:, None, None]
            shift = WEIGHT_BITS + in_bits - ACT_BITS
            x = acc >> shift if shift > 0 else acc << (-shift)  # floor division by 2**shift
            if self.shuffles[i]:
                x = _pixel_shuffle(x, self.shuffles[i])
            if i < n - 1:
                x = np.maximum(x, 0)
            x = np.clip(x, -ACT_LIMIT + 1, ACT_LIMIT - 1)
            in_bits = ACT_BITS
        m = x.shape[0] // 2
        return x[:m], x[m:]


def _conv_same(x: np.ndarray, w: np.ndarray, exact_float: bool) -> np.ndarray:
    """'Same' zero-padded 2-D convolution of integers; returns int64."""
    cout, cin, kh, kw = w.shape
    c, h, wd = x.shape
    ph, pw = kh // 2, kw // 2
    xp = np.zeros((c, h + 2 * ph, wd + 2 * pw), dtype=np.int64)
    xp[:, ph : ph + h, pw : pw + wd] = x
    cols = np.empty((cin, kh, kw, h * wd), dtype=np.float64 if exact_float else np.int64)
    for dy in range(kh):
        for dx in range(kw):
            cols[:, dy, dx] = xp[:, dy : dy + h, dx : dx + wd].reshape(cin, -1)
    cols = cols.reshape(cin * kh * kw, h * wd)
    wm = w.reshape(cout, -1)
    if exact_float:
        out = wm.astype(np.float64) @ cols
        # Every partial sum is an integer below 2**53 (checked at construction), so this is exact.
        return out.astype(np.int64).reshape(cout, h, wd)
    return (wm @ cols).reshape(cout, h, wd)


def _pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    c, h, w = x.shape
    oc = c // (r * r)
    return x.reshape(oc, r, r, h, w).transpose(0, 3, 1, 4, 2).reshape(oc, h * r, w * r)
