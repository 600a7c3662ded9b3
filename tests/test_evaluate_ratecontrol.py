"""Rate control for the baselines: the largest stream within the budget, found in few encodes."""

from __future__ import annotations

import math

import pytest

from radseal.evaluate.ratecontrol import Knob, RateController


def fake_encoder(scale: float, calls: list):
    """Size grows exponentially with an integer quality 1..100 (like JPEG/AVIF)."""

    def encode(q) -> bytes:
        calls.append(q)
        return b"x" * int(scale * math.exp(q / 15))

    return encode


@pytest.mark.parametrize("bpp", [0.05, 0.1, 0.3, 1.0])
def test_finds_largest_fitting_stream(bpp):
    pixels = 100_000
    calls: list = []
    ctl = RateController(Knob(1, 100, integer=True), max_encodes=12, close_enough=1.0)
    data, q = ctl.encode_at_bpp(fake_encoder(50, calls), pixels, bpp)
    budget = bpp * pixels / 8
    assert len(data) <= budget
    # Exhaustive check: no quality above q fits.
    sizes = {k: int(50 * math.exp(k / 15)) for k in range(1, 101)}
    assert q == max(k for k, s in sizes.items() if s <= budget)


def test_warm_start_saves_encodes():
    pixels = 100_000
    ctl = RateController(Knob(1, 100, integer=True))
    first, second = [], []
    ctl.encode_at_bpp(fake_encoder(50, first), pixels, 0.3)
    ctl.encode_at_bpp(fake_encoder(52, second), pixels, 0.3)  # a similar image
    assert len(second) <= len(first)
    assert ctl.encodes == [len(set(first)), len(set(second))]


def test_unreachable_target_returns_smallest_stream():
    calls: list = []
    ctl = RateController(Knob(1, 100, integer=True))
    data, q = ctl.encode_at_bpp(fake_encoder(5000, calls), 10_000, 0.01)
    assert q == 1 and len(data) == int(5000 * math.exp(1 / 15))


def test_log_knob_decreasing_like_jpegxl_distance():
    knob = Knob(low=12.0, high=0.55, log=True)
    assert knob.value(0) == 12.0 and knob.value(1) == 0.55
    assert knob.value(0.5) == pytest.approx(math.sqrt(12 * 0.55), rel=1e-3)
    assert 0.55 < knob.value(0.7) < knob.value(0.3) < 12.0
