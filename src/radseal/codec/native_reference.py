"""Pure-Python reference of the native-depth coder's prediction and context rule.

This mirrors ``code_plane`` in ``csrc/rsengine.c`` line by line, in plain
integers, so that a test can check the compiled engine against a readable
statement of the rule on small images (it is far too slow for real images).
For every pixel it gives the bias-corrected prediction (1/8 units), the
magnitude context, the bias context and the sign context, which together
decide every coded symbol.

Prediction: where the whole causal 5 x 3 window exists (y >= 2,
2 <= x < width - 2) an adaptive linear predictor (normalized LMS, integer
weights) on the window's 11 other pixels relative to N; elsewhere a blend of
eight fixed predictors weighted by their recent local errors. Edge rule for
the blend: W falls back to N (or to half the range at the first pixel), N to
W, NW/NE to N, WW to W, NN to N; errors at missing positions count as 0.

``band_contexts`` states the context rule of the detail-band coder behind
the reversible 5/3 front end (``band_code`` in the engine).
"""

from __future__ import annotations

import numpy as np

NPRED = 8
NLMS = 11
LMS_MU = 8
LMS_WMAX = 1 << 20
NINT = 32
NTEX = 64
NBIASACT = 8
BIAS_LIMIT = 64
NCTX = 48
PB = 3


def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


def _med3(a, b, c):
    mx, mn = max(a, b), min(a, b)
    return mx if c > mx else (mn if c < mn else c)


def _sgn3(v):
    return 2 if v > 0 else (0 if v < 0 else 1)


def _floor_shift(v, s):
    return v >> s  # Python's >> is floor division by 2**s for negatives too


def _tdiv(a, b):
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def act_bucket(a: int) -> int:
    if a == 0:
        return 0
    L = a.bit_length()
    b = 1 if L == 1 else 2 * L - 2 + ((a >> (L - 2)) & 1)
    return min(b, NCTX - 1)


def _blend(p, ep, x, y, w):
    """The border predictor: the fixed predictions weighted by their local errors."""
    E = []
    for i in range(NPRED):
        s = 0
        if y > 0:
            s += 2 * ep[y - 1][x][i]
        if x > 0:
            s += 2 * ep[y][x - 1][i]
        if y > 0 and x > 0:
            s += ep[y - 1][x - 1][i]
        if y > 0 and x + 1 < w:
            s += ep[y - 1][x + 1][i]
        E.append(s)
    emin = min(E)
    num = den = 0
    for i in range(NPRED):
        r = ((emin + 1) << 16) // (E[i] + 1)
        wi = (r * r) >> 16
        num += wi * p[i]
        den += wi
    return (num + den // 2) // den


def trace(pixels: np.ndarray, maxval: int, near: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prediction in 1/8 units, magnitude context, bias context, sign context) per pixel,
    for the encoder of ``pixels`` (values 0..maxval) with max error ``near``."""
    px = [[int(v) for v in row] for row in np.asarray(pixels)]
    h, w = len(px), len(px[0])
    step = 2 * near + 1
    maxp = maxval * 8
    mid = (maxval + 1) >> 1
    rec = [[0] * w for _ in range(h)]
    ef = [[0] * w for _ in range(h)]
    ep = [[[0] * NPRED for _ in range(w)] for _ in range(h)]
    bias_sum = [0] * (NTEX * NBIASACT)
    bias_cnt = [0] * (NTEX * NBIASACT)
    lw = [0] * NLMS
    lw[0] = 1 << 15
    nlev = [0] * NINT
    out = [np.zeros((h, w), np.int64) for _ in range(4)]
    for y in range(h):
        for x in range(w):
            W = rec[y][x - 1] if x > 0 else (rec[y - 1][x] if y > 0 else mid)
            N = rec[y - 1][x] if y > 0 else W
            NW = rec[y - 1][x - 1] if (y > 0 and x > 0) else N
            NE = rec[y - 1][x + 1] if (y > 0 and x + 1 < w) else N
            WW = rec[y][x - 2] if x > 1 else W
            NN = rec[y - 2][x] if y > 1 else N
            p = [
                N * 8,
                W * 8,
                _clamp((W + NE - N) * 8, 0, maxp),
                _med3(W, N, W + N - NW) * 8,
                (N + W) * 4,
                (W + NE) * 4,
                _clamp(N * 8 + (W - NW) * 4, 0, maxp),
                _clamp(W * 8 + (N - NW) * 4, 0, maxp),
            ]
            lms_on = y >= 2 and x >= 2 and x + 2 < w
            if lms_on:
                ld = [W - N, NW - N, NE - N, WW - N, NN - N, rec[y - 1][x - 2] - N, rec[y - 1][x + 2] - N,
                      rec[y - 2][x - 1] - N, rec[y - 2][x + 1] - N, rec[y - 2][x - 2] - N, rec[y - 2][x + 2] - N]
                lsum = sum(a * b for a, b in zip(lw, ld))
                lnorm = sum(d * d for d in ld)
                P = _clamp(N * 8 + _floor_shift(lsum, 16 - PB), 0, maxp)
            else:
                P = _blend(p, ep, x, y, w)
            eW = ef[y][x - 1] if x > 0 else 0
            eN = ef[y - 1][x] if y > 0 else 0
            eNW = ef[y - 1][x - 1] if (y > 0 and x > 0) else 0
            eNE = ef[y - 1][x + 1] if (y > 0 and x + 1 < w) else 0
            eWW = ef[y][x - 2] if x > 1 else 0
            eNN = ef[y - 2][x] if y > 1 else 0
            aerr = 2 * abs(eN) + 2 * abs(eW) + abs(eNW) + abs(eNE) + abs(eWW) + abs(eNN)
            if y > 0:
                aerr += (abs(ef[y - 1][x - 2]) if x > 1 else 0) + (abs(ef[y - 1][x + 2]) if x + 2 < w else 0)
            if y > 1:
                aerr += (abs(ef[y - 2][x - 1]) if x > 0 else 0) + (abs(ef[y - 2][x + 1]) if x + 1 < w else 0)
            grad = (abs(W - NW) + abs(N - NW) + abs(NE - N)) * 8
            ib = ((P + 4) >> 3) >> max(maxval.bit_length() - 5, 0)
            act = (aerr + grad + (nlev[ib] >> 1)) // step
            ctx = act_bucket(act)
            tex = sum(int(v * 8 > P) << j for j, v in enumerate((N, W, NW, NE, NN, WW)))
            bctx = tex * NBIASACT + min(ctx >> 2, NBIASACT - 1)
            cnt, sm = bias_cnt[bctx], bias_sum[bctx]
            corr = 0
            if cnt > 0:
                corr = (sm + cnt // 2) // cnt if sm >= 0 else -((-sm + cnt // 2) // cnt)
            Pc = _clamp(P + corr, 0, maxp)
            pred = (Pc + 4) >> 3
            sctx = _sgn3(eW) * 9 + _sgn3(eN) * 3 + _sgn3(eNW)
            e = px[y][x] - pred
            q = (e + near) // step if e >= 0 else -((-e + near) // step)
            r = _clamp(pred + q * step, 0, maxval)
            rec[y][x] = r
            rs = r * 8
            ef[y][x] = rs - Pc
            for i in range(NPRED):
                ep[y][x][i] = abs(rs - p[i])
            if lms_on:
                err8 = _clamp(rs - (N * 8 + _floor_shift(lsum, 16 - PB)), -(1 << 20), 1 << 20)
                g = _tdiv(err8 * LMS_MU * (1 << 19), lnorm + 16)
                lw = [_clamp(wj + _floor_shift(g * d, 16), -LMS_WMAX, LMS_WMAX) for wj, d in zip(lw, ld)]
            nlev[ib] += abs(ef[y][x]) - (nlev[ib] >> 4)
            sm += rs - P
            cnt += 1
            if cnt >= BIAS_LIMIT:
                sm = sm // 2 if sm >= 0 else -((-sm) // 2)
                cnt //= 2
            bias_sum[bctx], bias_cnt[bctx] = sm, cnt
            for arr, v in zip(out, (Pc, ctx, bctx, sctx)):
                arr[y, x] = v
    return tuple(out)


def band_contexts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contexts of the 5/3 detail-band coder (``band_code`` in rsengine.c) for one band, raster order.

    Neighbours outside the band count as 0. Magnitude context: act_bucket of
    2|N| + 2|W| + |NW| + |NE| + |WW| + |NN|, for hi = |v| >> 2; sign context:
    the signs of W, N, NW (27); low-bit context for lo = |v| & 3:
    (|W| & 3) * 4 + (|N| & 3), plus 16 where hi == 0. The band's models
    carry over from one band to the next in the stream.
    """
    v = np.asarray(values, np.int64)
    h, w = v.shape

    def at(y, x):
        return int(v[y, x]) if 0 <= y < h and 0 <= x < w else 0

    ctx = np.zeros((h, w), np.int32)
    sctx = np.zeros((h, w), np.int32)
    lctx = np.zeros((h, w), np.int32)
    for y in range(h):
        for x in range(w):
            N, W, NW, NE, WW, NN = at(y - 1, x), at(y, x - 1), at(y - 1, x - 1), at(y - 1, x + 1), at(y, x - 2), at(y - 2, x)
            act = 2 * abs(N) + 2 * abs(W) + abs(NW) + abs(NE) + abs(WW) + abs(NN)
            ctx[y, x] = act_bucket(act)
            sctx[y, x] = _sgn3(W) * 9 + _sgn3(N) * 3 + _sgn3(NW)
            lctx[y, x] = (abs(W) & 3) * 4 + (abs(N) & 3) + (16 if abs(int(v[y, x])) >> 2 == 0 else 0)
    return ctx, sctx, lctx
