"""Image quality at native bit depth, and Bjontegaard rate differences.

Every metric takes the two images as arrays of stored values (any integer or
float dtype) and the peak value of the image's own bit depth, so that a
15-bit radiograph is judged against 32767, not 255.
"""

from __future__ import annotations

import math

import numpy as np

# SciPy (radseal[evaluate]) is imported where it is used: psnr and mse serve the core
# install too (encode --preserve-diagnosis, demo), which has no SciPy.

# Wang, Simoncelli & Bovik 2003: the five scale weights of MS-SSIM.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def mse(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def mae(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.mean(np.abs(a - b)))


def max_abs_error(a, b) -> float:
    a, b = _pair(a, b)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def psnr(a, b, peak: float) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    err = mse(a, b)
    if err == 0:
        return math.inf
    return float(10.0 * math.log10(peak * peak / err))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    from scipy.ndimage import convolve1d

    r = len(win) // 2
    y = convolve1d(convolve1d(x, win, axis=0, mode="reflect"), win, axis=1, mode="reflect")
    return y[r:-r, r:-r] if min(x.shape) > 2 * r else y


def _ssim_terms(a: np.ndarray, b: np.ndarray, peak: float, win: np.ndarray) -> tuple[float, float]:
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _filter_valid(a, win), _filter_valid(b, win)
    var_a = _filter_valid(a * a, win) - mu_a**2
    var_b = _filter_valid(b * b, win) - mu_b**2
    cov = _filter_valid(a * b, win) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def ssim(a, b, peak: float) -> float:
    a, b = _pair(a, b)
    return _ssim_terms(a, b, peak, _gaussian_window())[0]


def ms_ssim(a, b, peak: float) -> float:
    """Multi-scale SSIM (Wang et al. 2003), 11x11 Gaussian window, sigma 1.5.

    Images too small for five scales (under 176 px on the short side) use as
    many scales as fit, with the weights renormalised.
    """
    a, b = _pair(a, b)
    win = _gaussian_window()
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(a.shape) // (2**scales) >= len(win) + 5:
        scales += 1
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    values = []
    for i in range(scales):
        s, cs = _ssim_terms(a, b, peak, win)
        values.append(max(s if i == scales - 1 else cs, 0.0))
        if i < scales - 1:
            h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
            a = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            b = b[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return float(np.prod(np.power(values, weights)))


def _monotone_curve(rates, quality) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.argsort(q)
    q, r = q[order], np.log(r[order])
    q, idx = np.unique(q, return_index=True)
    return q, r[idx]


def bd_rate(rate_ref, quality_ref, rate_test, quality_test, quality_range=None) -> float:
    """Bjontegaard delta rate of ``test`` against ``ref`` in percent.

    Negative means ``test`` needs fewer bits for the same quality. Uses
    monotone piecewise-cubic (PCHIP) interpolation of log-rate over quality,
    integrated over the quality interval both curves cover, further clipped
    to ``quality_range`` = (low, high) when given. Quality can be
    PSNR in dB or MS-SSIM (pass -10*log10(1-ms_ssim) for a dB-like scale).
    Returns NaN when the curves do not overlap or have under two points.
    """
    q_ref, lr_ref = _monotone_curve(rate_ref, quality_ref)
    q_test, lr_test = _monotone_curve(rate_test, quality_test)
    if len(q_ref) < 2 or len(q_test) < 2:
        return math.nan
    lo, hi = max(q_ref[0], q_test[0]), min(q_ref[-1], q_test[-1])
    if quality_range is not None:
        lo, hi = max(lo, float(quality_range[0])), min(hi, float(quality_range[1]))
    if hi <= lo:
        return math.nan
    grid = np.linspace(lo, hi, 200)
    from scipy.interpolate import PchipInterpolator

    diff = PchipInterpolator(q_test, lr_test)(grid) - PchipInterpolator(q_ref, lr_ref)(grid)
    avg = np.trapezoid(diff, grid) / (hi - lo)
    return float((math.exp(avg) - 1.0) * 100.0)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), for curves and BD-rate."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
