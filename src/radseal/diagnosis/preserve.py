"""Diagnosis-preserving rate control: the lowest codec quality whose
reconstruction keeps what the classifier says.

A quality level *passes* when its reconstruction

1. gets the same label from the classifier as the original,
2. moves the pneumonia probability by at most ``prob_tolerance``, and
3. stays at or above ``psnr_floor`` dB (at the image's own peak, 2^bits - 1).

:func:`choose_quality` returns the lowest passing level. It assumes that
passing is monotone in quality (true of rate and PSNR; usually, not provably,
of the classifier's output) and finds the level by binary search, so it
costs about log2(levels) + 1 encodes instead of one per level; the level it
returns has always been checked itself. When not even the highest level
passes it returns the highest, with ``passed=False`` and the reason.

    from radseal.codec import Codec
    from radseal.diagnosis import Classifier
    choice = choose_quality(img, Codec.pretrained(), Classifier.pretrained())
    print(choice.quality, choice.reason)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from radseal.errors import RadsealError
from radseal.image import Image

DEFAULT_PROB_TOLERANCE = 0.05
DEFAULT_PSNR_FLOOR = 38.0


class PreserveError(RadsealError):
    """Diagnosis-preserving rate control cannot run as asked."""


@dataclass(frozen=True)
class Attempt:
    """One quality level tried: its rate, PSNR, the classifier's view and the verdict."""

    quality: int
    bpp: float
    psnr: float
    probability: float
    label: int
    passed: bool
    why: str

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in self.__dict__.items()}


@dataclass
class Choice:
    quality: int
    bpp: float
    psnr: float
    prob_original: float
    prob_reconstructed: float
    label_original: int
    label_reconstructed: int
    passed: bool
    reason: str
    tried: list[Attempt] = field(default_factory=list)
    payload: bytes = b""  # the chosen level's compressed stream

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("payload", "tried")}
        d["psnr"] = None if math.isinf(self.psnr) else self.psnr
        d["payload_bytes"] = len(self.payload)
        d["tried"] = [a.to_dict() for a in self.tried]
        return d


def choose_quality(
    img: Image,
    codec,
    classifier,
    prob_tolerance: float = DEFAULT_PROB_TOLERANCE,
    psnr_floor: float = DEFAULT_PSNR_FLOOR,
) -> Choice:
    """The lowest quality of ``codec`` whose reconstruction of ``img`` keeps the diagnosis (see module doc)."""
    from radseal.evaluate.metrics import psnr

    if not 0 < prob_tolerance < 1:
        raise PreserveError(f"probability tolerance must be between 0 and 1, got {prob_tolerance}")
    if not math.isfinite(psnr_floor):
        raise PreserveError(f"PSNR floor must be a number of dB, got {psnr_floor}")
    levels = sorted(codec.qualities)
    if not levels:
        raise PreserveError("codec offers no quality levels")
    original = classifier.predict(img)
    pixels = img.height * img.width
    tried: dict[int, tuple[Attempt, bytes]] = {}

    def attempt(q: int) -> Attempt:
        if q in tried:
            return tried[q][0]
        data = codec.compress(img, quality=q)
        recon = codec.decompress(data)
        pred = classifier.predict(recon)
        p = psnr(img.pixels, recon.pixels, img.max_value)
        dp = abs(pred.probability - original.probability)
        problems = []
        if pred.label != original.label:
            problems.append(f"label changes {original.name} -> {pred.name}")
        if dp > prob_tolerance:
            problems.append(f"probability moves {dp:.3f} > {prob_tolerance:g}")
        if p < psnr_floor:
            problems.append(f"PSNR {p:.1f} dB < {psnr_floor:g} dB")
        why = "; ".join(problems) if problems else f"keeps {pred.name}, probability moves {dp:.3f}, PSNR {_db(p)}"
        a = Attempt(q, 8.0 * len(data) / pixels, p, pred.probability, pred.label, not problems, why)
        tried[q] = (a, data)
        return a

    top = attempt(levels[-1])
    if top.passed:
        lo, hi = 0, len(levels) - 1  # levels[hi] passes; find the lowest that does
        while lo < hi:
            mid = (lo + hi) // 2
            if attempt(levels[mid]).passed:
                hi = mid
            else:
                lo = mid + 1
        best = tried[levels[hi]][0]
        below = [tried[q][0] for q in levels[:hi] if q in tried]
        reason = f"quality {best.quality} is the lowest that {best.why}"
        if below:
            b = below[-1]
            reason += f"; quality {b.quality} fails: {b.why}"
        elif hi == 0:
            reason += " (the codec's lowest level)"
    else:
        best = top
        reason = f"no quality keeps the diagnosis; using the highest ({top.quality}), which fails: {top.why}"
    attempts = [tried[q][0] for q in sorted(tried)]
    return Choice(
        quality=best.quality,
        bpp=best.bpp,
        psnr=best.psnr,
        prob_original=original.probability,
        prob_reconstructed=best.probability,
        label_original=original.label,
        label_reconstructed=best.label,
        passed=best.passed,
        reason=reason,
        tried=attempts,
        payload=tried[best.quality][1],
    )


def _db(p: float) -> str:
    return "lossless" if math.isinf(p) else f"{p:.1f} dB"


def describe(choice: Choice) -> list[str]:
    """Lines for a command's output: the choice, why, and every level tried."""
    from radseal.diagnosis.classifier import LABELS

    head = (
        f"--preserve-diagnosis: quality {choice.quality} ({choice.bpp:.3f} bpp, {_db(choice.psnr)}); "
        f"p(pneumonia) {choice.prob_original:.3f} -> {choice.prob_reconstructed:.3f}, "
        f"label {LABELS[choice.label_original]} -> {LABELS[choice.label_reconstructed]}"
    )
    lines = [head, f"  why: {choice.reason}"]
    lines += [f"  tried q{a.quality}: {a.bpp:.3f} bpp, {_db(a.psnr)}, p={a.probability:.3f} {'pass' if a.passed else 'FAIL'} ({a.why})" for a in choice.tried]
    return lines
