"""Lossy coding at native depth without a ceiling: rsc3's quality ladder past 16 (radseal.codec.seq)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from radseal.codec import Codec, bitstream
from radseal.codec.native import MODEL_ID as NATIVE_ID
from radseal.codec.seq import MODEL_ID, NUM_SEQ_QUALITIES, SYMBOL_LIMIT, SeqCodec, band_steps, engine, flatten
from radseal.codec.subband import LEVELS
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path

DATA = Path(__file__).parent / "data"


def synthetic(h: int, w: int, bits: int) -> Image:
    """A deterministic image from integer arithmetic only (the same on every machine and numpy)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    top = (1 << bits) - 1
    ramp = (x * 7919 + y * 104729) % (top + 1)
    noise = ((x * 1103515245 + y * 12345 + (x * y) * 2654435761) >> 7) % 4096
    v = (ramp // 4 + noise * (top // 8192 + 1) + ((x // 9 + y // 7) % 2) * (top // 3)) % (top + 1)
    return Image(pixels=v.astype(np.uint16), bits_stored=bits)


def smooth16(h: int, w: int, seed: int = 3) -> Image:
    """A 16-bit radiograph-like image: smooth anatomy-like shading plus signal-dependent noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = 20000 + 30000 * np.exp(-((x - 0.5) ** 2 + (y - 0.45) ** 2) * 6) + 4000 * np.sin(9 * x + 3 * y)
    noisy = base + rng.normal(0, 1, base.shape) * np.sqrt(base) * 0.6
    return Image(pixels=np.clip(np.rint(noisy), 0, 65535).astype(np.uint16), bits_stored=16)


def rg1_crop(rows=slice(600, 728), cols=slice(700, 860)) -> Image:
    img = read_image(sample_path("RG1"))
    return img.with_pixels(np.ascontiguousarray(img.pixels[rows, cols]))


def _h(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:32]


def psnr(a: Image, b: Image) -> float:
    mse = float(np.mean((a.pixels.astype(np.float64) - b.pixels.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float((1 << a.bits_stored) - 1) ** 2 / mse)


@pytest.fixture(scope="module")
def codec() -> SeqCodec:
    c = Codec.pretrained()
    assert c.model_id == MODEL_ID
    return c


def test_ladder_reaches_past_16(codec):
    assert codec.qualities == tuple(range(1, NUM_SEQ_QUALITIES + 1)) and NUM_SEQ_QUALITIES == 46
    steps = [codec.quality_step(q) for q in codec.qualities]
    assert steps[:16] == [float(s) for s in codec.model.steps]  # 1..16: the weights' own steps
    ratios = np.array(steps[1:]) / np.array(steps[:-1])
    assert np.allclose(ratios, ratios[0], rtol=1e-9)  # one geometric progression throughout
    # the top step is under one stored unit of a full-range 16-bit image (0..255 scale)
    assert steps[-1] < 255.0 / 65535 and steps[-2] > 255.0 / 65535 * 0.5


@pytest.mark.parametrize("name", ["synthetic16", "synthetic12", "rg1_crop"])
def test_qualities_1_to_16_streams_and_images_unchanged(codec, name):
    """Streams made before qualities 17+ existed: the encoder with format 0's settings still writes
    them byte for byte and they decode to the same pixels (hashes recorded with the earlier coder,
    tests/data/README.md); the ladder past 16 moved nothing below it."""
    codec = SeqCodec(codec.model, fmt=0, loop_filter=None, rdo_levels=False)
    ref = json.loads((DATA / "rsc3_q1_16_reference.json").read_text())[name]
    img = {"synthetic16": lambda: synthetic(72, 90, 16), "synthetic12": lambda: synthetic(41, 57, 12),
           "rg1_crop": rg1_crop}[name]()
    streams = codec.compress_qualities(img, range(1, 17))
    for q in range(1, 17):
        stream_hash, pixel_hash = ref[str(q)]
        assert _h(streams[q]) == stream_hash, f"quality {q}: stream differs"
        assert _h(codec.decompress(streams[q]).pixels.astype("<u2").tobytes()) == pixel_hash, f"quality {q}"


@pytest.mark.parametrize("stored,name,q", [("rsc3_synthetic12_q9.rslc", "synthetic12", 9),
                                            ("rsc3_synthetic16_q16.rslc", "synthetic16", 16)])
def test_stored_old_streams_decode_as_before(codec, stored, name, q):
    data = (DATA / stored).read_bytes()
    assert bitstream.unpack(data)[0].quality == q
    pixel_hash = json.loads((DATA / "rsc3_q1_16_reference.json").read_text())[name][str(q)][1]
    assert _h(codec.decompress(data).pixels.astype("<u2").tobytes()) == pixel_hash


@pytest.mark.parametrize("make", [lambda: smooth16(96, 112), lambda: rg1_crop(slice(600, 792), slice(1200, 1392))],
                         ids=["synthetic16", "rg1_crop15"])
def test_psnr_rises_with_quality_past_70_db(codec, make):
    img = make()
    qs = [10, 14, 16, 17, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46]
    streams = codec.compress_qualities(img, qs)
    sizes = [len(streams[q]) for q in qs]
    dbs = [psnr(img, codec.decompress(streams[q])) for q in qs]
    assert sizes == sorted(sizes), sizes
    assert all(b > a or b == float("inf") for a, b in zip(dbs, dbs[1:])), dbs
    assert dbs[qs.index(16)] < 70 < dbs[-1]
    # near-lossless at the top: within a couple of stored values everywhere
    top = codec.decompress(streams[46]).pixels.astype(np.int64)
    assert np.abs(top - img.pixels).max() <= 2


def test_high_qualities_use_full_precision(codec):
    """At quality 46 a 16-bit image comes back within about one stored value: the pipeline keeps
    16-bit precision (an 8-bit internal range would leave errors of hundreds)."""
    img = smooth16(64, 80, seed=5)
    out = codec.decompress(codec.compress(img, quality=46))
    err = np.abs(out.pixels.astype(np.int64) - img.pixels)
    assert out.bits_stored == 16 and err.max() <= 1 and err.mean() < 0.2


def test_largest_possible_symbol_fits_the_engine(codec):
    """Bound over every image: a coefficient is at most the L1 norm of its analysis basis function
    times the 0..255 range; over the step at quality 46 that stays below the engine's 2^24 (so the
    encoder's clip never acts on a real image). The 2-D basis functions are products of 1-D ones."""
    from radseal.codec import wavelet
    from radseal.codec.subband import LEVELS

    ll_norm, norms = wavelet.synthesis_norms(LEVELS)
    worst = 0.0
    for n in (700, 1024, 1001):
        lo, lows, highs = np.eye(n), [], []
        for _ in range(LEVELS):
            lo, hi = wavelet._analyze_rows(lo)
            lows.append(np.abs(lo).sum(axis=0).max())
            highs.append(np.abs(hi).sum(axis=0).max())
        for j in range(LEVELS):  # j = 0: finest; norms are coarsest first
            nrm = norms[LEVELS - 1 - j]
            worst = max(worst, highs[j] * lows[j] * nrm["hl"], highs[j] ** 2 * nrm["hh"])
        worst = max(worst, lows[-1] ** 2 * ll_norm)
    largest = 255.0 * worst / codec.quality_step(codec.qualities[-1]) + 1
    # about 9.4e6 against 16.8e6; the low-pass band's MED residual is bounded by the band's range,
    # which is the same bound
    assert largest < SYMBOL_LIMIT / 1.5, largest


def test_extreme_16_bit_image_codes_at_the_top_quality(codec):
    """Full-range blocks, stripes and single-pixel spikes: the largest coefficients at the finest
    step fit the engine's magnitudes (low-pass band and escapes included) and decode."""
    rng = np.random.default_rng(7)
    h, w = 256, 192
    blocks = (rng.random((h // 32 + 1, w // 32 + 1)) < 0.5).repeat(32, 0).repeat(32, 1)[:h, :w]
    stripes = (np.arange(w) // 3 % 2).astype(bool)[None, :].repeat(h, 0)
    px = np.where(blocks ^ (stripes & (np.arange(h)[:, None] > h // 2)), 65535, 0).astype(np.uint16)
    px[5, 7] = 65535 - px[5, 7]
    img = Image(pixels=px, bits_stored=16)
    coeffs_state = codec._analyse_image(px, 0, 65535)
    sym = np.empty(h * w, np.int32)
    engine().seq_quantize(coeffs_state.coefficients(46), h, w, LEVELS, True, band_steps(codec, 46, h, w),
                          codec.model.rounding, sym, np.empty(0, np.int32))
    assert np.abs(sym).max() < SYMBOL_LIMIT  # no clipping needed on this image
    data = codec.compress(img, quality=46)
    out = codec.decompress(data)
    assert np.abs(out.pixels.astype(np.int64) - px).max() <= 1
    # any codec decodes it (dispatch by the stream's model id)
    assert np.array_equal(Codec.pretrained("rsc2-cdf97-ctx").decompress(data).pixels, out.pixels)


def test_out_of_range_quality_refused(codec):
    img = synthetic(16, 16, 12)
    for q in (0, 47, 1000):
        with pytest.raises(Exception, match="quality must be an integer in 1..46"):
            codec.compress(img, quality=q)


def test_bpp_is_honoured_across_the_whole_ladder(codec):
    img = rg1_crop(slice(600, 728), slice(1200, 1360))
    pixels = img.pixels.size
    sizes = {q: len(s) for q, s in codec.compress_qualities(img, codec.qualities).items()}
    for q in (3, 12, 20, 30, 40):
        target = sizes[q] * 8 / pixels * 1.001
        data = codec.compress(img, bpp=target)
        header = bitstream.unpack(data)[0]
        assert header.model_id == MODEL_ID and len(data) * 8 / pixels <= target
        chosen = header.quality
        assert chosen >= q and (chosen == codec.qualities[-1] or sizes[chosen + 1] * 8 / pixels > target)
    # past the top quality: the native-depth coder, up to lossless
    data = codec.compress(img, bpp=sizes[46] * 8 / pixels * 1.5)
    assert bitstream.unpack(data)[0].model_id == NATIVE_ID
    assert np.array_equal(codec.decompress(data).pixels, img.pixels)


def test_cli_quality_range_help_and_a_high_quality(tmp_path, capsys):
    """--quality states the new range, accepts 30 (refused before) and the stream comes back near-losslessly."""
    from radseal.cli import main
    from radseal.io import write_dicom

    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "an integer from 1 (smallest file) to 46 (most detail)" in help_text
    img = synthetic(40, 48, 12)
    write_dicom(img, tmp_path / "in.dcm")
    keys = tmp_path / "keys"
    keys.mkdir()
    for role, name in (("receiver", "rx"), ("device", "dev")):
        assert main(["keygen", role, name, "--out", str(keys)]) == 0
    assert main(["encode", str(tmp_path / "in.dcm"), "--to", str(keys / "rx.pub"), "--sign", str(keys / "dev.key"),
                 "-o", str(tmp_path / "q30.rsl"), "--quality", "30"]) == 0
    assert main(["decode", str(tmp_path / "q30.rsl"), "--key", str(keys / "rx.key"), "--trust", str(keys / "dev.pub"),
                 "-o", str(tmp_path / "out.dcm")]) == 0
    out = read_image(tmp_path / "out.dcm")
    assert out.bits_stored == 12 and psnr(img, out) > 75
    capsys.readouterr()
    code = main(["encode", str(tmp_path / "in.dcm"), "--to", str(keys / "rx.pub"), "--sign", str(keys / "dev.key"),
                 "-o", str(tmp_path / "q47.rsl"), "--quality", "47"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("radseal: error:") and "1..46" in err[0]
    assert not (tmp_path / "q47.rsl").exists()


def test_bd_rate_can_be_clipped_to_a_quality_range():
    """The benchmark's 40-70 dB window: a curve that only differs above 60 dB shows no change below."""
    from radseal.evaluate.metrics import bd_rate

    db = np.arange(30.0, 81.0, 5.0)
    ref = 2.0 ** ((db - 30) / 6.02) * 0.05
    test = np.where(db > 60, ref * 0.8, ref)
    whole = bd_rate(ref, db, test, db)
    below = bd_rate(ref, db, test, db, quality_range=(40, 55))
    above = bd_rate(ref, db, test, db, quality_range=(65, 80))
    assert abs(below) < 0.5 and -21 < above < -19 and above < whole < below
    assert np.isnan(bd_rate(ref, db, test, db, quality_range=(90, 95)))  # outside both curves
