"""The pneumonia network at inference time, in numpy (no PyTorch).

The same computation as :class:`radseal.diagnosis.model.PneumoniaNet` in
eval mode: per-view standardisation, a 5x5 stride-2 stem, four stages of two
3x3 convolutions, global average pooling and a linear head. Each batch norm
is folded into the convolution before it (in float64, then float32), and a
convolution is one matrix product over its patches (im2col); the layout is
NHWC so that the patches need no transposes. A 224 x 224 view is about
0.13 GFLOP.

Why by hand and not ONNX Runtime: the network is 10 convolutions, numpy is
already a core dependency, and ONNX Runtime would add about 50 MB to an
install that targets 300 MB; see docs/results/install_footprint.md.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
STD_FLOOR = 1e-3  # PneumoniaNet.forward clamps the per-view standard deviation here
STAGES = ("features.4", "features.5", "features.6", "features.7")


class _Conv:
    """A bias-free convolution followed by an eval-mode batch norm, folded into one affine map."""

    def __init__(self, state: dict[str, np.ndarray], conv: str, bn: str, stride: int) -> None:
        w = np.asarray(state[f"{conv}.weight"], dtype=np.float64)  # (Cout, Cin, k, k)
        if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 != 1:
            raise ValueError(f"{conv}.weight has shape {w.shape}, not (Cout, Cin, k, k) with odd k")
        cout = w.shape[0]
        gamma, beta, mean, var = (np.asarray(state[f"{bn}.{n}"], dtype=np.float64) for n in ("weight", "bias", "running_mean", "running_var"))
        for name, v in zip(("weight", "bias", "running_mean", "running_var"), (gamma, beta, mean, var)):
            if v.shape != (cout,):
                raise ValueError(f"{bn}.{name} has shape {v.shape}, expected ({cout},)")
        scale = gamma / np.sqrt(var + BN_EPS)
        self.k = w.shape[2]
        self.cin = w.shape[1]
        self.stride = stride
        # (k, k, Cin, Cout) flattened: the order of the patch columns built in __call__.
        self.matrix = np.ascontiguousarray((w * scale[:, None, None, None]).transpose(2, 3, 1, 0).reshape(-1, cout), dtype=np.float32)
        self.bias = (beta - mean * scale).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, Cin)`` -> ``(N, Ho, Wo, Cout)`` after the ReLU."""
        n, h, w, c = x.shape
        if c != self.cin:
            raise ValueError(f"expected {self.cin} channels, got {c}")
        k, s, pad = self.k, self.stride, self.k // 2
        ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        cols = np.empty((n, ho, wo, k, k, c), dtype=np.float32)
        for i in range(k):
            for j in range(k):
                cols[:, :, :, i, j, :] = xp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s, :]
        out = cols.reshape(n * ho * wo, k * k * c) @ self.matrix
        out += self.bias
        np.maximum(out, 0.0, out=out)
        return out.reshape(n, ho, wo, -1)


def _max_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, dropping an odd last row or column (torch's floor mode)."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, : 2 * h2, : 2 * w2].reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


class PneumoniaNetNumpy:
    """``(N, S, S)`` float32 views in [0, 1] -> ``(N,)`` float64 logits of pneumonia."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        try:
            self.stem = _Conv(state, "features.0", "features.1", stride=2)
            self.stages = [(_Conv(state, f"{s}.0", f"{s}.1", 1), _Conv(state, f"{s}.3", f"{s}.4", 1)) for s in STAGES]
            self.head_w = np.asarray(state["head.1.weight"], dtype=np.float64)
            self.head_b = np.asarray(state["head.1.bias"], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"weights lack {exc.args[0]}") from None
        chain = [self.stem] + [c for pair in self.stages for c in pair]
        if self.stem.cin != 1:
            raise ValueError(f"the stem takes {self.stem.cin} channels, expected 1")
        for a, b in zip(chain, chain[1:]):
            if b.cin != a.matrix.shape[1]:
                raise ValueError("the layers' channel counts do not chain")
        if self.head_w.shape != (1, chain[-1].matrix.shape[1]) or self.head_b.shape != (1,):
            raise ValueError(f"head.1 has shape {self.head_w.shape}, expected (1, {chain[-1].matrix.shape[1]})")

    def __call__(self, views: np.ndarray) -> np.ndarray:
        x = np.asarray(views, dtype=np.float32)
        # Per-view standardisation, as in PneumoniaNet.forward (unbiased std, floored).
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=(1, 2), keepdims=True)
        std = np.maximum(x64.std(axis=(1, 2), ddof=1, keepdims=True), STD_FLOOR)
        x = ((x64 - mean) / std).astype(np.float32)[..., None]
        x = _max_pool2(self.stem(x))
        for a, b in self.stages:
            x = _max_pool2(b(a(x)))
        pooled = x.astype(np.float64).mean(axis=(1, 2))
        return pooled @ self.head_w[0] + self.head_b[0]
