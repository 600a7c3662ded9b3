"""The default rate (radseal.codec.default_rate): per image, at least JPEG 2000's PSNR at 30:1."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from radseal.codec import Codec, bitstream
from radseal.codec.default_rate import (
    REFERENCE_RATIO,
    bits_allocated,
    jpeg2000_at_ratio,
    reference_bpp,
    squared_error,
)
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.pretrained()


@pytest.fixture(scope="module")
def rg1() -> Image:
    return read_image(sample_path("RG1"))


@pytest.fixture(scope="module")
def chest8(rg1) -> Image:
    """An 8-bit chest radiograph: a crop of RG1 scaled to 0..255."""
    px = rg1.pixels[500:1012, 600:1112].astype(np.float64)
    px = np.rint((px - px.min()) / (px.max() - px.min()) * 255).astype(np.uint8)
    return Image(px, bits_stored=8)


def test_ratio_counts_bits_allocated():
    assert bits_allocated(8) == 8 and bits_allocated(1) == 8
    assert bits_allocated(10) == bits_allocated(12) == bits_allocated(16) == 16
    assert reference_bpp(8) == pytest.approx(8 / 30) and reference_bpp(12) == pytest.approx(16 / 30)


def test_reference_is_jpeg2000_at_30_to_1(chest8, rg1):
    for img in (chest8, rg1):
        data, back = jpeg2000_at_ratio(img.pixels, img.bits_stored)
        assert data[:2] == b"\xff\x4f"  # a JPEG 2000 codestream (SOC marker)
        bpp = 8 * len(data) / img.pixels.size
        assert 0.9 * reference_bpp(img.bits_stored) <= bpp <= reference_bpp(img.bits_stored)
        assert back.shape == img.pixels.shape


def _lossy_quality(data: bytes) -> int:
    return bitstream.unpack(data)[0].quality


def test_default_is_the_lowest_quality_at_least_as_faithful_as_jpeg2000(codec, chest8):
    import copy

    data = codec.compress(chest8)
    target = squared_error(chest8.pixels, jpeg2000_at_ratio(chest8.pixels, 8)[1])
    out = codec.decompress(data)
    assert squared_error(chest8.pixels, out.pixels) <= target
    q = _lossy_quality(data)
    assert q > codec.qualities[0]
    plain = copy.copy(codec)
    plain.band_weights = None
    if data == codec.compress(chest8, quality=q):  # a rung of the ladder: the one below falls short
        below = codec.decompress(codec.compress(chest8, quality=q - 1))
        assert squared_error(chest8.pixels, below.pixels) > target
        between = plain.compress(chest8, quality=q - 1)
        assert len(between) >= len(data) or squared_error(chest8.pixels, codec.decompress(between).pixels) > target
    else:  # between rungs: that quality without band weights, smaller than the next rung up
        assert data == plain.compress(chest8, quality=q)
        assert len(data) < len(codec.compress(chest8, quality=q + 1))
        below = codec.decompress(codec.compress(chest8, quality=q))
        assert squared_error(chest8.pixels, below.pixels) > target  # the weighted rung falls short


def test_default_lands_between_rungs_on_rg1(codec, rg1):
    """On RG1 quality 13 with band weights falls just short of JPEG 2000 at 30:1 and quality 14
    overshoots by about a third; quality 13 without them meets it (measured 2026-12-03)."""
    data = codec.compress(rg1)
    out = codec.decompress(data)
    target = squared_error(rg1.pixels, jpeg2000_at_ratio(rg1.pixels, rg1.bits_stored)[1])
    assert squared_error(rg1.pixels, out.pixels) <= target
    assert len(data) < len(codec.compress(rg1, quality=14))


def test_default_at_native_depth_meets_the_reference(codec, rg1):
    crop = rg1.with_pixels(np.ascontiguousarray(rg1.pixels[600:984, 700:1084]))
    data = codec.compress(crop)
    out = codec.decompress(data)
    target = squared_error(crop.pixels, jpeg2000_at_ratio(crop.pixels, crop.bits_stored)[1])
    assert squared_error(crop.pixels, out.pixels) <= target
    assert out.bits_stored == crop.bits_stored


def test_native_coder_takes_over_where_the_lossy_ladder_ends(codec, rg1):
    # A 10-bit image (RG3): JPEG 2000 at 16/30 bpp is nearly exact there. The full ladder
    # (1..46) reaches it; a ladder cut at 16 (rsc2's range) does not, and the default falls back
    # to the native-depth coder, whose bound keeps it no worse than the reference.
    import copy

    from radseal.codec.default_rate import compress_default

    short = copy.copy(codec)
    short.num_qualities = 16
    rg3 = read_image(sample_path("RG3"))
    crop = rg3.with_pixels(np.ascontiguousarray(rg3.pixels[400:912, 1200:1712]))
    target = squared_error(crop.pixels, jpeg2000_at_ratio(crop.pixels, crop.bits_stored)[1])
    top = short.decompress(short.compress(crop, quality=16))
    assert squared_error(crop.pixels, top.pixels) > target, "quality 16 already reaches JPEG 2000 here"
    out = short.decompress(compress_default(short, crop))
    assert out.metadata.get("max_error") is not None
    assert squared_error(crop.pixels, out.pixels) <= target
    # the full ladder meets the reference with a lossy stream
    full = codec.decompress(codec.compress(crop))
    assert full.metadata.get("max_error") is None
    assert squared_error(crop.pixels, full.pixels) <= target


def test_constant_and_tiny_images(codec):
    flat = Image(np.full((40, 30), 77, np.uint8), bits_stored=8)
    assert np.array_equal(codec.decompress(codec.compress(flat)).pixels, flat.pixels)
    tiny = Image(np.arange(10, dtype=np.uint16).reshape(1, 10) * 100, bits_stored=12)
    out = codec.decompress(codec.compress(tiny))  # too small for OpenJPEG: top quality, no error
    assert out.shape == (1, 10)


def test_help_states_the_default():
    for cmd in (["encode", "--help"], ["send", "--help"], ["demo", "--help"]):
        text = subprocess.run([sys.executable, "-m", "radseal", *cmd], capture_output=True, text=True, check=True).stdout
        flat = " ".join(text.split())
        assert f"JPEG 2000 (OpenJPEG) at {REFERENCE_RATIO:.0f}:1" in flat, cmd
        assert "codec default when omitted" not in flat


def test_cli_encode_without_a_setting_uses_the_default_rate(tmp_path, capsys, codec, chest8):
    from radseal.cli import main
    from radseal.io import write_image

    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["keygen", "receiver", "hospital", "--out", str(keys)]) == 0
    assert main(["keygen", "device", "unit", "--out", str(keys)]) == 0
    write_image(chest8, tmp_path / "chest.png")
    base = ["encode", str(tmp_path / "chest.png"), "--to", str(keys / "hospital.pub"), "--sign", str(keys / "unit.key")]
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "a.rsl")]) == 0
    out = capsys.readouterr().out
    q = _lossy_quality(codec.compress(chest8))
    assert f"mode: lossy, quality {q} ({codec.model_id}) (the default rate: at least JPEG 2000's PSNR at 30:1)" in out
    assert main(base + ["--quality", "5", "-o", str(tmp_path / "b.rsl")]) == 0
    out = capsys.readouterr().out
    assert "mode: lossy, quality 5" in out and "default rate" not in out
