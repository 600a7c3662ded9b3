"""A signalled, decoder-side adaptive loop filter (the Wiener filter of AV1's and VVC's ALF).

The encoder fits, by least squares on the *decoded* image against the original,
a small point-symmetric filter over a 7 x 7 diamond (12 coefficients; the
centre tap is implied so that the filter keeps the mean), one per class of
pixels; it quantizes the coefficients to integers and sends them; the decoder
applies them after the inverse transform::

    out(p) = y(p) + sum_k c_k * (y(p + d_k) + y(p - d_k) - 2 y(p)) / 2**s

Classes come from the decoded image only: a pixel's local activity (its
Laplacian magnitude summed over a 5 x 5 window) split by 0, 1 or 3 thresholds
(quantiles the encoder picks and sends), crossed or not with the pixel's phase
on the 2 x 2 lattice (CDF 9/7 synthesizes even and odd samples with different
filters, so their best corrections differ). The encoder tries six layouts and
keeps the one with the lowest squared error + lambda x bits, or none; a class
whose quantized filter does not lower the squared error is sent as zeros (off).

Only pixels see this module: it runs after the integer parse, in float32 on
the 0..255 scale the transform works in. Payload (``encode_params``)::

    1 byte    activity classes A (0: no filter, nothing follows)
    1 byte    phase classes P (1 or 4)
    A-1 bytes activity thresholds t, as round(16 * log2(1 + t))
    A*P x     per class: a shift s (1 byte), then 12 coefficients c (int8)
    13 bytes
"""

from __future__ import annotations

import numpy as np

from radseal.codec.errors import BitstreamError

#: the half of a 7 x 7 diamond (|dy| + |dx| <= 3), one offset of each point-symmetric pair
TAPS = tuple((dy, dx) for dy in range(0, 4) for dx in range(-3, 4) if abs(dy) + abs(dx) <= 3 and (dy > 0 or dx > 0))
PAD = 3
STRIP = 256


def _features(yp: np.ndarray, r0: int, r1: int, width: int) -> np.ndarray:
    """(taps, rows, width) symmetric second differences of rows r0..r1 of the image padded by PAD."""
    c = yp[PAD + r0 : PAD + r1, PAD : PAD + width]
    out = np.empty((len(TAPS), r1 - r0, width), dtype=np.float32)
    for k, (dy, dx) in enumerate(TAPS):
        a = yp[PAD + r0 + dy : PAD + r1 + dy, PAD + dx : PAD + width + dx]
        b = yp[PAD + r0 - dy : PAD + r1 - dy, PAD - dx : PAD + width - dx]
        np.add(a, b, out=out[k])
        out[k] -= 2 * c
    return out


def _box(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over a (2r+1)^2 window (edge-replicated), separably."""
    h, w = a.shape
    p = np.pad(a, r, mode="edge")
    rows = p[: h, :].copy()
    for d in range(1, 2 * r + 1):
        rows += p[d : d + h, :]
    out = rows[:, :w].copy()
    for d in range(1, 2 * r + 1):
        out += rows[:, d : d + w]
    return out


def activity(y: np.ndarray) -> np.ndarray:
    """Per pixel, the local activity (from the decoded image only)."""
    p = np.pad(y, 1, mode="reflect") if min(y.shape) > 1 else np.pad(y, 1, mode="edge")
    c = p[1:-1, 1:-1]
    gv = np.abs(2 * c - p[:-2, 1:-1] - p[2:, 1:-1])
    out = _box(gv, 2)
    del gv
    gh = np.abs(2 * c - p[1:-1, :-2] - p[1:-1, 2:])
    out += _box(gh, 2)
    return out


def _code_threshold(t: float) -> int:
    return int(np.clip(round(16 * np.log2(1 + max(t, 0.0))), 0, 255))


def _threshold(code: int) -> float:
    return float(2 ** (code / 16) - 1)


def classes(y: np.ndarray, thresholds: list[int], phases: int, act=None) -> np.ndarray:
    """Per pixel (uint8): activity class (by the thresholds) x, with 4 phases, its position on the
    2 x 2 lattice (the wavelet's even and odd samples are synthesized by different filters)."""
    act = activity(y) if act is None else act
    cls = np.zeros(y.shape, dtype=np.uint8)
    for code in thresholds:
        cls += act > _threshold(code)
    if phases == 4:
        cls *= 4
        cls += _phase(y.shape).astype(np.uint8)
    return cls


def _pad(y: np.ndarray) -> np.ndarray:
    mode = "reflect" if min(y.shape) > PAD else "symmetric"
    return np.pad(y.astype(np.float32), PAD, mode=mode)


def _phase(shape) -> np.ndarray:
    return (np.arange(shape[0])[:, None] % 2) * 2 + np.arange(shape[1])[None, :] % 2


#: the class layouts the encoder tries: (activity classes, 1 or 4 phase classes)
LAYOUTS = ((1, 1), (1, 4), (2, 1), (2, 4), (4, 1), (4, 4))


def fit(y: np.ndarray, x: np.ndarray, lam: float = 0.0, layouts=LAYOUTS, max_shift: int = 10):
    """Parameters (see ``encode_params``) of the filter that best maps decoded ``y`` to original ``x``
    (both on the same scale), or None when none pays for itself.

    The normal equations are gathered once for 4 activity x 4 phase classes; each layout in
    ``layouts`` merges them, solves, quantizes, keeps the classes whose squared-error saving
    exceeds ``lam`` (squared error per bit) times their bits, and the layout with the lowest
    squared error + lam x bits wins."""
    h, w = y.shape
    if h < 2 or w < 2:
        return None
    av = activity(y)
    t4 = sorted({_code_threshold(t) for t in np.quantile(av, [0.25, 0.5, 0.75])})
    cls = classes(y, t4, 4, av)  # fine classes: activity quartile x phase
    del av
    n4 = len(t4) + 1
    yp = _pad(y)
    k = len(TAPS)
    ata = np.zeros((n4 * 4, k, k))
    atb = np.zeros((n4 * 4, k))
    for r0 in range(0, h, STRIP):
        r1 = min(h, r0 + STRIP)
        f = _features(yp, r0, r1, w).reshape(k, -1)
        c = cls[r0:r1].ravel()
        e = (x[r0:r1].astype(np.float32) - y[r0:r1].astype(np.float32)).ravel()
        order = np.argsort(c, kind="stable")
        f, e = f[:, order], e[order]
        bounds = np.searchsorted(c[order], np.arange(n4 * 4 + 1))
        for j in range(n4 * 4):
            a, b = bounds[j], bounds[j + 1]
            if b > a:
                ata[j] += (f[:, a:b] @ f[:, a:b].T).astype(np.float64)
                atb[j] += (f[:, a:b] @ e[a:b]).astype(np.float64)
    best, best_j = None, lam * 8.0  # no filter: one byte
    for acts, phases in layouts:
        if acts > n4 or (acts == 2 and n4 != 4):
            continue
        thresholds = [] if acts == 1 else ([t4[1]] if acts == 2 else t4)
        group = np.arange(n4) * acts // n4  # fine activity class -> this layout's
        ncls = acts * phases
        A = np.zeros((ncls, k, k))
        B = np.zeros((ncls, k))
        for j in range(n4 * 4):
            t = group[j // 4] * phases + (j % 4 if phases == 4 else 0)
            A[t] += ata[j]
            B[t] += atb[j]
        ints = np.zeros((ncls, k), dtype=np.int64)
        shifts = np.zeros(ncls, dtype=np.int64)
        saved = 0.0
        for j in range(ncls):
            tr = np.trace(A[j])
            if tr <= 0:
                continue
            coef = np.linalg.solve(A[j] + 1e-6 * tr / k * np.eye(k), B[j])
            big = float(np.abs(coef).max())
            if big == 0:
                continue
            shifts[j] = int(np.clip(np.floor(np.log2(127.0 / big)), 0, max_shift))
            ints[j] = np.clip(np.rint(coef * 2.0 ** shifts[j]), -127, 127)
            cq = ints[j] / 2.0 ** shifts[j]
            gain = 2 * cq @ B[j] - cq @ A[j] @ cq  # squared error saved by this class's filter
            if gain > 0:
                saved += gain
            else:
                ints[j] = 0  # an all-zero class is off (its bytes are sent all the same)
        cost = lam * 8.0 * (2 + len(thresholds) + ncls * (1 + k)) - saved
        if ints.any() and cost < best_j:
            best_j = cost
            best = {"thresholds": thresholds, "phases": phases, "shifts": shifts, "coef": ints}
    return best


def encode_params(params) -> bytes:
    if params is None:
        return bytes([0])
    t = params["thresholds"]
    out = bytes([len(t) + 1, params["phases"]]) + bytes(t)
    return out + b"".join(bytes([int(s)]) + c.astype(np.int8).tobytes() for s, c in zip(params["shifts"], params["coef"]))


def decode_params(data: bytes, pos: int):
    """(params or None, position after them); BitstreamError on a malformed field."""
    def need(n):
        if pos + n > len(data):
            raise BitstreamError("sequential wavelet payload is truncated (loop filter)")

    need(1)
    a = data[pos]
    if a == 0:
        return None, pos + 1
    need(2)
    d = data[pos + 1]
    if a > 16 or d not in (1, 4):
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    pos += 2
    need(a - 1)
    thresholds = list(data[pos : pos + a - 1])
    if thresholds != sorted(set(thresholds)):
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    pos += a - 1
    n = a * d * (1 + len(TAPS))
    need(n)
    rows = np.frombuffer(data[pos : pos + n], dtype=np.uint8).reshape(a * d, 1 + len(TAPS))
    shifts = rows[:, 0].astype(np.int64)
    if (shifts > 15).any():
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    coef = rows[:, 1:].copy().view(np.int8).astype(np.int64)
    return {"thresholds": thresholds, "phases": d, "shifts": shifts, "coef": coef}, pos + n


def apply(y: np.ndarray, params) -> np.ndarray:
    """The filtered image (float32); ``y`` itself when params is None."""
    if params is None:
        return y
    h, w = y.shape
    if h < 2 or w < 2:
        return y
    cls = classes(y, params["thresholds"], params["phases"])
    coef = (params["coef"] / 2.0 ** params["shifts"][:, None]).astype(np.float32)
    yp = _pad(y)
    out = y.astype(np.float32).copy()
    for r0 in range(0, h, STRIP):
        r1 = min(h, r0 + STRIP)
        f = _features(yp, r0, r1, w)
        c = cls[r0:r1]
        corr = np.zeros((r1 - r0, w), dtype=np.float32)
        for k in range(len(TAPS)):
            corr += coef[:, k][c] * f[k]
        out[r0:r1] += corr
    return out
