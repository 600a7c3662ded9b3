"""Baseline codecs: round trips at native depth, lossless references, bad streams."""

from __future__ import annotations

import numpy as np
import pytest

from radseal.baselines import BASELINES, BaselineError, get_baseline
from radseal.evaluate.metrics import psnr
from radseal.image import Image
from radseal.io import read_image


@pytest.fixture(scope="module")
def rg1_crop(rg1_path) -> Image:
    img = read_image(rg1_path)
    return img.with_pixels(img.pixels[600:856, 700:956])


@pytest.fixture(scope="module")
def smooth8() -> Image:
    yy, xx = np.mgrid[0:128, 0:160]
    return Image((128 + 90 * np.sin(xx / 13.0) * np.cos(yy / 9.0)).astype(np.uint8), bits_stored=8)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("which", ["smooth8", "rg1_crop"])
def test_round_trip_and_rate_grows_with_quality(name, which, request):
    img = request.getfixturevalue(which)
    codec = get_baseline(name)
    params = codec.params_for(img)
    sizes = []
    for p in (params[0], params[-1]):
        data = codec.compress(img, p)
        out = codec.decompress(data)
        assert out.shape == img.shape and out.bits_stored == img.bits_stored
        assert out.pixels.dtype == img.pixels.dtype and out.photometric == img.photometric
        sizes.append(len(data))
        if codec.lossless:
            assert np.array_equal(out.pixels, img.pixels)
        else:
            assert psnr(img.pixels, out.pixels, img.max_value) > 25
    if not codec.lossless:
        assert sizes[1] > sizes[0]


def test_bad_streams():
    codec = get_baseline("jpeg2000")
    with pytest.raises(BaselineError):
        codec.decompress(b"RS")
    with pytest.raises(BaselineError):
        get_baseline("jpegxl").decompress(codec.compress(Image(np.zeros((8, 8), np.uint8)), 40))
    data = bytearray(codec.compress(Image(np.arange(64, dtype=np.uint8).reshape(8, 8)), 40))
    with pytest.raises(BaselineError):
        codec.decompress(bytes(data[:12]))
    with pytest.raises(BaselineError):
        get_baseline("webp2")
