"""The CDF 9/7 wavelet (the one JPEG 2000's lossy path uses), by lifting, for any size.

Written by hand rather than taken from PyWavelets because the codec needs
the exact lifting form with whole-sample symmetric extension at both ends
for every length (odd ones included), numpy-only, and it is 60 lines; the
transform is float and runs only on pixels, never on entropy-coding state,
so its rounding cannot change what the decoder reads.

This module is the reference: rsc2 codes with it, and the compiled engine's
restatement (``wt_forward``/``wt_inverse``, section 6 of ``csrc/rsengine.c``,
which rsc3 uses, in place on the :func:`pack` layout) is tested against it.

``forward(x, levels)`` returns a :class:`Pyramid`: the coarsest low-pass
band and, per level from coarsest to finest, the three detail bands
(``hl``: horizontal high-pass, ``lh``: vertical high-pass, ``hh``: both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_A = -1.586134342059924
_B = -0.052980118572961
_C = 0.882911075530934
_D = 0.443506852043971
_K = 1.230174104914001
ORIENTATIONS = ("hl", "lh", "hh")


@dataclass
class Pyramid:
    ll: np.ndarray
    details: list[dict[str, np.ndarray]]  # coarsest first


def _right(a: np.ndarray, n: int) -> np.ndarray:
    """a[i+1] for i in 0..n-1 along the last axis, mirrored past the end."""
    if a.shape[-1] > n:
        return a[..., 1 : n + 1]
    return np.concatenate([a[..., 1:], a[..., -1:]], axis=-1)


def _left(a: np.ndarray, n: int) -> np.ndarray:
    """a[i-1] for i in 0..n-1 along the last axis, with a[-1] mirrored to a[0]."""
    return np.concatenate([a[..., :1], a[..., : n - 1]], axis=-1)


def _cur(a: np.ndarray, n: int) -> np.ndarray:
    """a[i] for i in 0..n-1 along the last axis, a[n-1] mirrored to a[n-2] when a is one short."""
    if a.shape[-1] >= n:
        return a[..., :n]
    return np.concatenate([a, a[..., -1:]], axis=-1)


def _analyze_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[-1]
    if n < 2:
        return x.copy(), x[..., :0].copy()
    even = x[..., 0::2].copy()
    odd = x[..., 1::2].copy()
    ne, no = even.shape[-1], odd.shape[-1]
    odd += _A * (even[..., :no] + _right(even, no))
    even += _B * (_left(odd, ne) + _cur(odd, ne))
    odd += _C * (even[..., :no] + _right(even, no))
    even += _D * (_left(odd, ne) + _cur(odd, ne))
    return even / _K, odd * _K


def _synthesize_rows(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    ne, no = low.shape[-1], high.shape[-1]
    if no == 0:
        return low.copy()
    even = low * _K
    odd = high / _K
    even -= _D * (_left(odd, ne) + _cur(odd, ne))
    odd -= _C * (even[..., :no] + _right(even, no))
    even -= _B * (_left(odd, ne) + _cur(odd, ne))
    odd -= _A * (even[..., :no] + _right(even, no))
    out = np.empty(low.shape[:-1] + (ne + no,), dtype=low.dtype)
    out[..., 0::2] = even
    out[..., 1::2] = odd
    return out


def forward(x: np.ndarray, levels: int) -> Pyramid:
    """Decompose a 2-D float array; levels stop early once a side would drop below 2."""
    ll = np.asarray(x)
    if ll.dtype not in (np.float32, np.float64):
        ll = ll.astype(np.float64)
    details: list[dict[str, np.ndarray]] = []
    for _ in range(levels):
        if min(ll.shape) < 2:
            break
        lo, hi = _analyze_rows(ll)
        lolo, lohi = _analyze_rows(lo.T)
        hilo, hihi = _analyze_rows(hi.T)
        details.append({"hl": hilo.T.copy(), "lh": lohi.T.copy(), "hh": hihi.T.copy()})
        ll = lolo.T.copy()
    details.reverse()
    return Pyramid(ll=ll, details=details)


def inverse(p: Pyramid) -> np.ndarray:
    ll = p.ll
    for bands in p.details:
        lo = _synthesize_rows(ll.T, bands["lh"].T).T
        hi = _synthesize_rows(bands["hl"].T, bands["hh"].T).T
        ll = _synthesize_rows(lo, hi)
    return ll


def pack(p: Pyramid) -> np.ndarray:
    """The pyramid in one array, as the compiled transform keeps it in place: per level, the
    region it worked on holds [LL | HL ; LH | HH] (low rows and columns first)."""
    if p.details:
        h = p.details[-1]["hl"].shape[0] + p.details[-1]["lh"].shape[0]
        w = p.details[-1]["lh"].shape[1] + p.details[-1]["hl"].shape[1]
    else:
        h, w = p.ll.shape
    out = np.empty((h, w), dtype=p.ll.dtype)
    lh_, lw_ = p.ll.shape
    out[:lh_, :lw_] = p.ll
    for d in p.details:
        lo_r, lo_c = d["hl"].shape[0], d["lh"].shape[1]
        rh, rw = lo_r + d["lh"].shape[0], lo_c + d["hl"].shape[1]
        out[:lo_r, lo_c:rw] = d["hl"]
        out[lo_r:rh, :lo_c] = d["lh"]
        out[lo_r:rh, lo_c:rw] = d["hh"]
    return out


def unpack(x: np.ndarray, levels: int) -> Pyramid:
    """The inverse of :func:`pack` (copies of the bands)."""
    ll_shape, sizes = band_shapes(x.shape[0], x.shape[1], levels)
    details = []
    for lo_r, hi_r, lo_c, hi_c in sizes:
        details.append({
            "hl": x[:lo_r, lo_c : lo_c + hi_c].copy(),
            "lh": x[lo_r : lo_r + hi_r, :lo_c].copy(),
            "hh": x[lo_r : lo_r + hi_r, lo_c : lo_c + hi_c].copy(),
        })
    return Pyramid(ll=x[: ll_shape[0], : ll_shape[1]].copy(), details=details)


def band_shapes(height: int, width: int, levels: int) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """(low-pass shape, per level coarsest first: (low rows, high rows, low cols, high cols))."""
    h, w = height, width
    sizes = []
    for _ in range(levels):
        if min(h, w) < 2:
            break
        sizes.append(((h + 1) // 2, h // 2, (w + 1) // 2, w // 2))
        h, w = (h + 1) // 2, (w + 1) // 2
    sizes.reverse()
    return (h, w), sizes


def synthesis_norms(levels: int, size: int = 256) -> tuple[float, list[dict[str, float]]]:
    """L2 norm of each band's synthesis basis function (for MSE-balanced step sizes)."""
    p = forward(np.zeros((size, size)), levels)

    def norm_of(setter) -> float:
        q = Pyramid(ll=np.zeros_like(p.ll), details=[{k: np.zeros_like(v) for k, v in d.items()} for d in p.details])
        setter(q)
        return float(np.sqrt((inverse(q) ** 2).sum()))

    def at_centre(a: np.ndarray) -> None:
        a[a.shape[0] // 2, a.shape[1] // 2] = 1.0

    ll_norm = norm_of(lambda q: at_centre(q.ll))
    detail_norms = [{o: norm_of(lambda q, i=i, o=o: at_centre(q.details[i][o])) for o in ORIENTATIONS} for i in range(len(p.details))]
    return ll_norm, detail_norms
