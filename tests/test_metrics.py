"""Quality metrics and BD-rate against hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radseal.evaluate.metrics import bd_rate, mae, ms_ssim, mse, psnr, ssim


def test_psnr_uses_the_given_peak():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 1.0)
    assert mse(a, b) == 1.0 and mae(a, b) == 1.0
    assert psnr(a, b, 255) == pytest.approx(20 * math.log10(255))
    assert psnr(a, b, 32767) == pytest.approx(20 * math.log10(32767))
    assert psnr(a, a, 255) == math.inf


def test_ssim_family_is_one_for_identical_and_drops_with_noise():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4096, size=(200, 200)).astype(float)
    assert ssim(a, a, 4095) == pytest.approx(1.0)
    assert ms_ssim(a, a, 4095) == pytest.approx(1.0)
    light = a + rng.normal(0, 20, a.shape)
    heavy = a + rng.normal(0, 400, a.shape)
    assert 1.0 > ms_ssim(a, light, 4095) > ms_ssim(a, heavy, 4095) > 0.0


def test_ms_ssim_handles_small_images():
    a = np.arange(40 * 30, dtype=float).reshape(40, 30)
    noisy = a + np.random.default_rng(1).normal(0, 30, a.shape)
    assert 0.0 < ms_ssim(a, noisy, 1200.0) < 1.0


def test_bd_rate_of_a_curve_needing_half_the_bits_is_minus_fifty():
    rates = [0.1, 0.2, 0.4, 0.8]
    quality = [30.0, 33.0, 36.0, 39.0]
    assert bd_rate(rates, quality, [r / 2 for r in rates], quality) == pytest.approx(-50.0)
    assert bd_rate(rates, quality, [r * 1.1 for r in rates], quality) == pytest.approx(10.0)


def test_bd_rate_without_overlap_is_nan():
    assert math.isnan(bd_rate([0.1, 0.2], [30, 31], [0.1, 0.2], [40, 41]))
