"""Hitting a target bit rate with a codec that only has a quality knob.

The classic baselines expose their own knob (JPEG quality, JPEG 2000 target
PSNR, JPEG XL distance, AVIF quality). To compare codecs at matched rates,
:func:`encode_at_bpp` searches the knob per image for the *highest quality
whose stream fits the budget* (the rule radseal's ``Codec.compress(bpp=...)``
uses), so no codec is credited with bits it did not spend.

The search runs on a position ``t`` in [0, 1] along the knob's range (log
scale for JPEG XL's distance), where log-rate is close to linear; it starts
from the position that fitted the previous image (rates of similar images
are similar) and uses secant steps inside a bracket, so a target usually
costs 2-4 encodes instead of a full sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Knob:
    """A codec parameter from its lowest-rate value ``low`` to its highest-rate value ``high``."""

    low: float
    high: float
    integer: bool = False
    log: bool = False

    def value(self, t: float):
        t = min(max(t, 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.low) + t * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + t * (self.high - self.low)
        return int(round(v)) if self.integer else round(v, 4)


@dataclass
class RateController:
    """Per (codec, target): remembers where the last image's search ended."""

    knob: Knob
    max_encodes: int = 6
    close_enough: float = 0.9  # stop once the fitting stream uses this share of the budget
    last_t: float | None = None
    encodes: list[int] = field(default_factory=list)  # encodes spent per image (for the report)

    def encode_at_bpp(self, encode: Callable[[object], bytes], pixels: int, bpp: float) -> tuple[bytes, object]:
        """The largest stream of at most ``bpp`` bits per pixel (the smallest if none fits), and its knob value."""
        budget = bpp * pixels / 8.0
        tried: dict = {}

        def size_at(t: float) -> tuple[float, int]:
            v = self.knob.value(t)
            if v not in tried:
                tried[v] = encode(v)
            return t, len(tried[v])

        under: tuple[float, int] | None = None  # (t, size) best fitting
        over: tuple[float, int] | None = None  # (t, size) smallest not fitting
        t = 0.5 if self.last_t is None else self.last_t
        for _ in range(self.max_encodes):
            t, size = size_at(t)
            if size <= budget:
                if under is None or size > under[1]:
                    under = (t, size)
            elif over is None or size < over[1]:
                over = (t, size)
            if under and under[1] >= self.close_enough * budget:
                break
            if under and under[0] >= 1.0:
                break  # highest rate fits
            if over and over[0] <= 0.0:
                break  # lowest rate does not fit
            t = self._next(under, over, budget)
            if self.knob.value(t) in tried and under and over:
                t = (under[0] + over[0]) / 2  # integer knob: the secant rounded onto a tried value
            if self.knob.value(t) in tried:
                break  # bracket closed
        if under is None:
            _, size = size_at(0.0)
            if size <= budget:
                under = (0.0, size)
        best_t = under[0] if under else 0.0
        self.last_t = best_t
        self.encodes.append(len(tried))
        value = self.knob.value(best_t)
        return tried[value], value

    @staticmethod
    def _next(under, over, budget: float) -> float:
        log_b = math.log(budget)
        if under and over:  # secant inside the bracket, kept away from its ends
            (t0, s0), (t1, s1) = under, over
            frac = (log_b - math.log(s0)) / (math.log(s1) - math.log(s0)) if s1 != s0 else 0.5
            return t0 + min(max(frac, 0.15), 0.85) * (t1 - t0)
        if under:  # only fitting points: step up in rate
            t0, s0 = under
            return min(1.0, t0 + max(0.1, 0.35 * (log_b - math.log(s0))))
        t1, s1 = over  # only oversize points: step down
        return max(0.0, t1 - max(0.1, 0.35 * (math.log(s1) - log_b)))
