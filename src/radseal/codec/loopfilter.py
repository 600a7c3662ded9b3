"""A signalled, decoder-side adaptive loop filter (the Wiener filter of AV1's and VVC's ALF).

The encoder fits, by least squares on the *decoded* image against the original,
a small point-symmetric filter over a 7 x 7 diamond (12 coefficients; the
centre tap is implied so that the filter keeps the mean), one per class of
pixels; it quantizes the coefficients to integers and sends them; the decoder
applies them after the inverse transform::

    out(p) = y(p) + sum_k c_k * (y(p + d_k) + y(p - d_k) - 2 y(p)) / 2**shift

Classes (as ALF's) come from the decoded image only: a pixel's local activity
(its Laplacian magnitude summed over a 5 x 5 window), split by thresholds that
the encoder picks as quantiles and sends, crossed with which of the horizontal
or vertical Laplacian dominates. A class whose quantized filter does not lower
the squared error is sent as all zeros (off).

Only pixels see this module: it runs after the integer parse, in float32 on
the 0..255 scale the transform works in. Payload (``encode_params``)::

    1 byte    activity classes A (0: no filter, nothing follows)
    1 byte    direction classes D (1 or 2)
    A-1 bytes activity thresholds, round(16 * log2(1 + t))
    1 byte    shift
    A*D*12    coefficients (int8)
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
    """Sum over a (2r+1)^2 window (edge-replicated)."""
    p = np.pad(a, r, mode="edge").astype(np.float64)
    s = np.cumsum(np.cumsum(p, axis=0), axis=1)
    s = np.pad(s, ((1, 0), (1, 0)))
    n = 2 * r + 1
    h, w = a.shape
    return (s[n : n + h, n : n + w] - s[:h, n : n + w] - s[n : n + h, :w] + s[:h, :w]).astype(np.float32)


def activity(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(activity, vertical-dominates) per pixel, from the decoded image only."""
    p = np.pad(y, 1, mode="reflect") if min(y.shape) > 1 else np.pad(y, 1, mode="edge")
    c = p[1:-1, 1:-1]
    gv = np.abs(2 * c - p[:-2, 1:-1] - p[2:, 1:-1])
    gh = np.abs(2 * c - p[1:-1, :-2] - p[1:-1, 2:])
    sv, sh = _box(gv, 2), _box(gh, 2)
    return sv + sh, sv > sh


def _code_threshold(t: float) -> int:
    return int(np.clip(round(16 * np.log2(1 + max(t, 0.0))), 0, 255))


def _threshold(code: int) -> float:
    return float(2 ** (code / 16) - 1)


def classes(y: np.ndarray, thresholds: list[int], directions: int) -> np.ndarray:
    act, vert = activity(y)
    cls = np.zeros(y.shape, dtype=np.int32)
    for code in thresholds:
        cls += act > _threshold(code)
    if directions == 2:
        cls = cls * 2 + vert
    return cls


def _pad(y: np.ndarray) -> np.ndarray:
    mode = "reflect" if min(y.shape) > PAD else "symmetric"
    return np.pad(y.astype(np.float32), PAD, mode=mode)


def fit(y: np.ndarray, x: np.ndarray, act_classes: int = 1, directions: int = 1, max_shift: int = 10):
    """Parameters (see ``encode_params``) of the filter that best maps decoded ``y`` to original ``x``
    (both on the same scale), or None when no class gains."""
    h, w = y.shape
    if h < 2 or w < 2:
        return None
    act, _ = activity(y)
    qs = np.quantile(act, np.arange(1, act_classes) / act_classes) if act_classes > 1 else []
    thresholds = sorted({_code_threshold(t) for t in qs})
    cls = classes(y, thresholds, directions)
    ncls = (len(thresholds) + 1) * directions
    yp = _pad(y)
    k = len(TAPS)
    ata = np.zeros((ncls, k, k))
    atb = np.zeros((ncls, k))
    err = (x.astype(np.float32) - y.astype(np.float32))
    for r0 in range(0, h, STRIP):
        r1 = min(h, r0 + STRIP)
        f = _features(yp, r0, r1, w).reshape(k, -1)
        c = cls[r0:r1].ravel()
        e = err[r0:r1].ravel()
        for j in range(ncls):
            sel = c == j
            if sel.any():
                fj = f[:, sel].astype(np.float64)
                ata[j] += fj @ fj.T
                atb[j] += fj @ e[sel]
    coef = np.zeros((ncls, k))
    for j in range(ncls):
        if np.trace(ata[j]) > 0:
            coef[j] = np.linalg.solve(ata[j] + 1e-6 * np.trace(ata[j]) / k * np.eye(k), atb[j])
    big = float(np.abs(coef).max())
    if big == 0:
        return None
    shift = int(np.clip(np.floor(np.log2(127.0 / big)), 0, max_shift))
    ints = np.clip(np.rint(coef * 2**shift), -127, 127).astype(np.int64)
    # keep a class only where its quantized filter lowers the squared error: c^T A c - 2 c^T b < 0
    for j in range(ncls):
        cq = ints[j] / 2**shift
        if cq @ ata[j] @ cq - 2 * cq @ atb[j] >= 0:
            ints[j] = 0
    if not ints.any():
        return None
    return {"thresholds": thresholds, "directions": directions, "shift": shift, "coef": ints}


def encode_params(params) -> bytes:
    if params is None:
        return bytes([0])
    t = params["thresholds"]
    out = bytes([len(t) + 1, params["directions"]]) + bytes(t) + bytes([params["shift"]])
    return out + params["coef"].astype(np.int8).tobytes()


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
    if a > 16 or d not in (1, 2):
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    pos += 2
    need(a - 1 + 1)
    thresholds = list(data[pos : pos + a - 1])
    if thresholds != sorted(set(thresholds)):
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    shift = data[pos + a - 1]
    if shift > 15:
        raise BitstreamError("sequential wavelet payload has a malformed loop filter")
    pos += a
    n = a * d * len(TAPS)
    need(n)
    coef = np.frombuffer(data[pos : pos + n], dtype=np.int8).astype(np.int64).reshape(a * d, len(TAPS))
    return {"thresholds": thresholds, "directions": d, "shift": shift, "coef": coef}, pos + n


def apply(y: np.ndarray, params) -> np.ndarray:
    """The filtered image (float32); ``y`` itself when params is None."""
    if params is None:
        return y
    h, w = y.shape
    if h < 2 or w < 2:
        return y
    cls = classes(y, params["thresholds"], params["directions"])
    coef = (params["coef"] / 2 ** params["shift"]).astype(np.float32)
    yp = _pad(y)
    out = y.astype(np.float32).copy()
    for r0 in range(0, h, STRIP):
        r1 = min(h, r0 + STRIP)
        f = _features(yp, r0, r1, w)
        corr = np.einsum("ck,krw->crw", coef, f) if len(coef) > 1 else coef[0] @ f.reshape(len(TAPS), -1)
        if len(coef) > 1:
            out[r0:r1] += np.take_along_axis(corr, cls[r0:r1][None], axis=0)[0]
        else:
            out[r0:r1] += corr.reshape(r1 - r0, w)
    return out
