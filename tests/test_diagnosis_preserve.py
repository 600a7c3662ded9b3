"""choose_quality: the lowest level that keeps label, probability and PSNR, found by binary search."""

from __future__ import annotations

import numpy as np
import pytest

from radseal.diagnosis.classifier import Prediction
from radseal.diagnosis.preserve import PreserveError, choose_quality, describe
from radseal.image import Image


class NoiseCodec:
    """Quality q adds noise of amplitude 9 - q: higher q, cleaner image, more 'bytes'; never lossless."""

    qualities = tuple(range(1, 9))

    def __init__(self):
        self.calls = 0

    def compress(self, img: Image, quality: int) -> bytes:
        self.calls += 1
        return bytes([quality]) + b"x" * (100 * quality)

    def decompress(self, data: bytes) -> Image:
        q = data[0]
        rng = np.random.default_rng(0)
        noise = rng.integers(-(9 - q) * 6, (9 - q) * 6 + 1, self.base.shape)
        return Image(np.clip(self.base.astype(int) + noise, 0, 255).astype(np.uint8), bits_stored=8)


class MeanClassifier:
    """p = image mean / 255 plus a shift per noise level, so the probability drifts as quality drops."""

    def __init__(self, base_mean: float, drift_per_level: float):
        self.base_mean = base_mean
        self.drift = drift_per_level

    def predict(self, img: Image) -> Prediction:
        noise = float(np.abs(img.pixels.astype(int) - self.reference.astype(int)).mean())
        p = min(1.0, 0.6 + self.drift * noise)
        return Prediction(p, int(p >= 0.5))


@pytest.fixture
def setup():
    base = (np.arange(64 * 64).reshape(64, 64) % 200 + 20).astype(np.uint8)
    codec = NoiseCodec()
    codec.base = base
    clf = MeanClassifier(base.mean(), 0.004)
    clf.reference = base
    return Image(base, bits_stored=8), codec, clf


def test_chooses_lowest_passing_level_by_binary_search(setup):
    img, codec, clf = setup
    choice = choose_quality(img, codec, clf, prob_tolerance=0.05, psnr_floor=20.0)
    assert choice.passed
    # The exhaustive answer: every level checked with the same three rules.
    from radseal.evaluate.metrics import psnr

    p0 = clf.predict(img)
    passing = []
    for q in codec.qualities:
        recon = codec.decompress(codec.compress(img, quality=q))
        pr = clf.predict(recon)
        if pr.label == p0.label and abs(pr.probability - p0.probability) <= 0.05 and psnr(img.pixels, recon.pixels, 255) >= 20.0:
            passing.append(q)
    assert choice.quality == min(passing)
    below = [a for a in choice.tried if a.quality == choice.quality - 1]
    assert below and not below[0].passed  # the level under it was checked and fails
    assert len(choice.tried) <= 5  # log2(8) + 1, not all 8 levels
    assert choice.payload[0] == choice.quality
    assert abs(choice.prob_reconstructed - choice.prob_original) <= 0.05
    assert choice.psnr >= 20.0
    assert "lowest" in choice.reason and f"quality {choice.quality}" in choice.reason


def test_psnr_floor_pushes_quality_up(setup):
    img, codec, clf = setup
    loose = choose_quality(img, codec, clf, prob_tolerance=0.5, psnr_floor=10.0)
    strict = choose_quality(img, codec, clf, prob_tolerance=0.5, psnr_floor=35.0)
    assert strict.quality > loose.quality
    assert strict.psnr >= 35.0


def test_label_flip_is_refused(setup):
    img, codec, clf = setup
    clf.drift = -0.02  # noise pushes p below 0.5: NORMAL instead of PNEUMONIA
    choice = choose_quality(img, codec, clf, prob_tolerance=0.9, psnr_floor=0.0)
    assert choice.label_reconstructed == choice.label_original
    assert any("label changes" in a.why for a in choice.tried if not a.passed)


def test_nothing_passes_falls_back_to_highest(setup):
    img, codec, clf = setup
    choice = choose_quality(img, codec, clf, prob_tolerance=0.05, psnr_floor=200.0)
    assert not choice.passed and choice.quality == 8
    assert "no quality keeps the diagnosis" in choice.reason
    assert len(choice.tried) == 1
    assert describe(choice)[0].startswith("--preserve-diagnosis: quality 8")


def test_bad_arguments(setup):
    img, codec, clf = setup
    with pytest.raises(PreserveError):
        choose_quality(img, codec, clf, prob_tolerance=0)
    with pytest.raises(PreserveError):
        choose_quality(img, codec, clf, psnr_floor=float("nan"))
