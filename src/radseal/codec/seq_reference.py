"""Pure-Python restatement of the sequential coder's context rule (``csrc/rsengine.c``,
section 5), for tests: slow, but written from the documented rule, not from the C code.

``contexts(symbols, shapes, fmt)`` returns, per coefficient in coding order, the
(magnitude context, sign context, significance contexts of the two views,
mixer weight set, APM set) the engine uses; for low-pass coefficients the
magnitude context of the MED residual and zeros. The APM set (payload format
1 only; 0 in format 0) is (model x brightness in 8 classes of the decoded
low-pass range x own activity class capped at 7 x siblings nonzero).
"""

from __future__ import annotations

import numpy as np

ZOWN = 10  # own-activity classes of the significance context
NBRIGHT = 1  # brightness classes


def act_bucket(a: int) -> int:
    """Two buckets per octave: 0, 1, 2, 3, 4-5, 6-7, 8-11, ... (capped at 47)."""
    if a == 0:
        return 0
    a = int(a)
    n = a.bit_length()
    b = 1 if n == 1 else 2 * n - 2 + ((a >> (n - 2)) & 1)
    return min(b, 47)


def sgn3(v: int) -> int:
    return 2 if v > 0 else (0 if v < 0 else 1)


def _at(band: np.ndarray, y: int, x: int) -> int:
    h, w = band.shape
    if h == 0 or w == 0:
        return 0
    return int(band[min(y, h - 1), min(x, w - 1)])


APM_SETS = 128  # APM sets per model


def contexts(symbols: np.ndarray, shapes: list[tuple[int, int]], fmt: int = 0) -> np.ndarray:
    bands, pos = [], 0
    for h, w in shapes:
        bands.append(np.asarray(symbols[pos : pos + h * w], dtype=object).reshape(h, w))
        pos += h * w
    out = []
    ll = bands[0]
    h, w = ll.shape
    for y in range(h):
        for x in range(w):
            W = ll[y, x - 1] if x > 0 else (ll[y - 1, x] if y > 0 else 0)
            N = ll[y - 1, x] if y > 0 else W
            NW = ll[y - 1, x - 1] if (y > 0 and x > 0) else N
            NE = ll[y - 1, x + 1] if (y > 0 and x + 1 < w) else N
            out.append((act_bucket(abs(W - NW) + abs(N - NW) + abs(NE - N)), 0, 0, 0, 0, 0))
    lo, hi = (int(ll.min()), int(ll.max())) if ll.size else (0, 0)
    for b in range(1, len(bands)):
        band = bands[b]
        lev, o = (b - 1) // 3, (b - 1) % 3
        h, w = band.shape

        def g(yy, xx):
            return int(band[yy, xx]) if 0 <= yy < h and 0 <= xx < w else 0

        for y in range(h):
            for x in range(w):
                N, W, NW, NE, NN, WW = g(y - 1, x), g(y, x - 1), g(y - 1, x - 1), g(y - 1, x + 1), g(y - 2, x), g(y, x - 2)
                own = 2 * abs(N) + 2 * abs(W) + abs(NW) + abs(NE) + abs(NN) + abs(WW)
                P = _at(bands[b - 3], y >> 1, x >> 1) if lev > 0 else 0
                sib = min(sum(abs(_at(bands[b - o + s], y, x)) for s in range(o)), 1 << 28)
                ps = 2 * abs(P) + sib
                k = 0 if own == 0 else (1 if ps == 0 else 2)
                pz = 0 if P == 0 else (1 if abs(P) == 1 else 2)
                sz = 0 if sib == 0 else (1 if sib == 1 else 2)
                br = min(max((_at(ll, y >> lev, x >> lev) - lo) * NBRIGHT // (hi - lo + 1), 0), NBRIGHT - 1)
                zc = ((br * ZOWN + min(act_bucket(own), ZOWN - 1)) * 3 + pz) * 3 + sz
                # second significance view: nearest two, farther four, parent's 3 x 3 (siblings on level 0)
                nw = abs(N) + abs(W)
                c1 = 0 if nw == 0 else (1 if nw == 1 else (2 if nw <= 3 else 3))
                c2 = (NW != 0) + (NE != 0) + (NN != 0) + (WW != 0)
                if lev > 0:
                    pband = bands[b - 3]
                    pn = sum(abs(_at(pband, (y >> 1) + dy, (x >> 1) + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                             if (y >> 1) + dy >= 0 and (x >> 1) + dx >= 0)
                else:
                    pn = sib
                c3 = 0 if pn == 0 else (1 if pn <= 2 else (2 if pn <= 6 else 3))
                zc2 = (c1 * 5 + c2) * 4 + c3
                ab = min(act_bucket(own), ZOWN - 1)
                mset = model_index(len(bands), b) * ZOWN * 4 + ab * 4 + c3
                aset = 0
                if fmt >= 1:
                    br8 = min(max((_at(ll, y >> lev, x >> lev) - lo) * 8 // (hi - lo + 1), 0), 7)
                    aset = model_index(len(bands), b) * APM_SETS + br8 * 16 + min(ab, 7) * 2 + (sib > 0)
                out.append((16 * k + min(15, act_bucket(min(own + ps, 1 << 30))), 9 * sgn3(N) + 3 * sgn3(W) + sgn3(P), zc, zc2, mset, aset))
    return np.asarray(out, dtype=np.int32).reshape(-1, 6)


def model_index(nbands: int, b: int) -> int:
    """The adaptive model set of detail band ``b``: (level from finest, capped at 3) x (hl/lh, hh)."""
    nlev = (nbands - 1) // 3
    lev, o = (b - 1) // 3, (b - 1) % 3
    return 1 + 2 * min(nlev - 1 - lev, 3) + (o == 2)
