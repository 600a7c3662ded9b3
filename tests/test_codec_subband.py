"""The wavelet codec family (rsc2): transform, integer contexts, determinism, escapes, fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radseal.codec import Codec, context, subband, wavelet
from radseal.codec.weights import read_registry, weights_dir
from radseal.evaluate.metrics import psnr
from radseal.image import Image
from radseal.io import read_image

MODEL_ID = "rsc2-cdf97-ctx"


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.pretrained(MODEL_ID)


@pytest.fixture(scope="module")
def rg1_crop(rg1_path) -> Image:
    img = read_image(rg1_path)
    return img.with_pixels(img.pixels[600:856, 700:1020])


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (64, 64), (101, 77), (513, 300)])
def test_wavelet_reconstructs_exactly(shape):
    x = np.random.default_rng(0).normal(size=shape) * 100
    assert np.abs(wavelet.inverse(wavelet.forward(x, 6)) - x).max() < 1e-9


def test_wavelet_band_shapes_match_the_transform():
    for shape in [(1, 9), (33, 17), (1000, 777)]:
        p = wavelet.forward(np.zeros(shape), 6)
        ll_shape, sizes = wavelet.band_shapes(*shape, 6)
        assert p.ll.shape == ll_shape and len(sizes) == len(p.details)
        for (lo_r, hi_r, lo_c, hi_c), bands in zip(sizes, p.details):
            assert bands["hl"].shape == (lo_r, hi_c) and bands["lh"].shape == (hi_r, lo_c) and bands["hh"].shape == (hi_r, hi_c)


def test_context_features_never_read_their_own_phase():
    """Positions of the phase being coded are unknown to the decoder: changing them must not
    change the features (the coder also keeps later phases at zero until they are decoded)."""
    rng = np.random.default_rng(2)
    band = rng.integers(0, 9, size=(9, 11))
    for phase in context.PHASES:
        changed = band.copy()
        changed[phase[0] :: 2, phase[1] :: 2] = rng.integers(0, 999, size=changed[phase[0] :: 2, phase[1] :: 2].shape)
        static = context.band_context(band, [band], band.shape, np.zeros(band.shape, np.int32))
        a = context.phase_features(band, static, 3, phase)
        b = context.phase_features(changed, static, 3, phase)
        assert np.array_equal(a, b)


def test_decoder_recovers_exactly_the_encoders_symbols(codec, rg1_crop):
    data = codec.compress(rg1_crop, quality=9)
    symbols, indices = codec.decode_symbols(data)
    assert np.array_equal(symbols, codec.encoder_symbols(rg1_crop, 9))
    assert indices.min() >= 0 and indices.max() < subband.NUM_SCALES


def test_symbols_survive_perturbed_float_paths(codec, rg1_crop, monkeypatch):
    """Another machine: a decoder whose transform rounds differently (float32, noise) must read
    the same symbols; only the reconstructed pixels may move, and only slightly."""
    data = codec.compress(rg1_crop, quality=10)
    ref_symbols, ref_idx = codec.decode_symbols(data)
    ref_pixels = codec.decompress(data).pixels.astype(np.int64)
    rng = np.random.default_rng(7)
    real_inverse = wavelet.inverse

    def sloppy_inverse(p):
        out = real_inverse(wavelet.Pyramid(ll=p.ll.astype(np.float32), details=[{k: v.astype(np.float32) for k, v in d.items()} for d in p.details]))
        return out * (1 + 1e-6 * rng.standard_normal(out.shape))

    monkeypatch.setattr(wavelet, "inverse", sloppy_inverse)
    symbols, idx = codec.decode_symbols(data)
    assert np.array_equal(symbols, ref_symbols) and np.array_equal(idx, ref_idx)
    out = codec.decompress(data).pixels.astype(np.int64)
    assert np.abs(out - ref_pixels).max() <= max(2, rg1_crop.max_value // 1000)


def test_an_encoder_with_other_rounding_still_decodes_exactly(codec, rg1_crop):
    """The edge device may compute the transform differently; whatever symbols it writes are what
    the server reads, because table choice depends on integer symbols only."""
    model = codec.model
    coeffs = model.analyse(rg1_crop.pixels.astype(np.float64) / rg1_crop.max_value)
    nudged = wavelet.Pyramid(ll=coeffs.ll * (1 + 1e-7), details=[{k: v * (1 + 1e-7) for k, v in d.items()} for d in coeffs.details])
    h, w = rg1_crop.shape
    payload = model.encode(nudged, h, w, 11)
    decoded, _ = model.read_symbols(payload, h, w, 11)
    expected, _ = model.choose_symbols(nudged, h, w, 11)
    assert np.array_equal(subband._flatten(decoded), subband._flatten(expected))


def test_table_index_is_pure_integer_arithmetic(codec):
    """The vectorised index equals a plain Python int computation of the documented rule."""
    model = codec.model
    rng = np.random.default_rng(4)
    feats = rng.integers(0, context.NUM_BUCKETS, size=(context.NUM_FEATURES, 5, 6))
    for cls in (0, 17, subband.NUM_CLASSES - 1):
        got = model.table_index(feats, cls)
        for r in range(5):
            for c in range(6):
                s = int(model.bias[cls]) + sum(int(model.weights[cls, f, feats[f, r, c]]) for f in range(context.NUM_FEATURES))
                want = min(max((s + 8) >> 4, 0), subband.NUM_SCALES - 1)
                assert got[r, c] == want


def test_escapes_code_values_beyond_every_table(codec):
    """A single full-scale spike on black, at the finest step: coefficients far past the tables."""
    px = np.zeros((40, 48), np.uint16)
    px[20, 20] = 65535
    px[3, 40] = 40000
    img = Image(px, bits_stored=16)
    data = codec.compress(img, quality=16)
    symbols, indices = codec.decode_symbols(data)
    detail = symbols[symbols.size - indices.size :]  # the low-pass symbols come first
    assert (np.abs(detail) >= codec.model.half[indices]).any(), "no symbol went past its table: nothing escaped"
    out = codec.decompress(data)
    assert psnr(px, out.pixels, 65535) > 40


def test_rate_distortion_pass_only_drops_ones_to_zero(codec, rg1_crop):
    """The encoder's RD pass changes nothing but some +-1 symbols to 0, and it saves bytes."""
    model = codec.model
    coeffs = model.analyse(rg1_crop.pixels.astype(np.float64) / rg1_crop.max_value)
    h, w = rg1_crop.shape
    plain = subband._flatten(model.quantize(coeffs, 6))
    chosen = subband._flatten(model.choose_symbols(coeffs, h, w, 6)[0])
    changed = plain != chosen
    assert changed.any()
    assert np.all(np.abs(plain[changed]) == 1) and np.all(chosen[changed] == 0)
    saved = len(model.encode(coeffs, h, w, 6))
    old = subband.RDO_LAMBDA
    try:
        subband.RDO_LAMBDA = 0.0
        assert len(model.encode(coeffs, h, w, 6)) > saved
    finally:
        subband.RDO_LAMBDA = old


def test_quality_ladder_is_monotone_on_a_radiograph(codec, rg1_crop):
    sizes = [len(codec.compress(rg1_crop, quality=q)) for q in codec.qualities]
    assert sizes == sorted(sizes)


def test_shipped_weights_record_how_they_were_made():
    reg = read_registry()
    entry = reg["models"][MODEL_ID]
    # the default (rsc3) codes these weights; rsc2 itself stays installed and decodable
    assert entry["family"] == "subband" and reg["models"][reg["default"]].get("weights_of") == MODEL_ID
    record = json.loads((weights_dir() / f"{MODEL_ID}.json").read_text())
    assert record["training"]["command"].startswith("radseal fit-codec")
    assert record["training"]["samples"] > 1_000_000
    assert record["bytes"] < 2_000_000


def test_fit_codec_smoke(tmp_path, monkeypatch):
    """``radseal fit-codec`` end to end on a tiny generated data set: weights that code and decode."""
    from PIL import Image as PILImage

    from radseal.codec.subband_fit import train_subband

    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        folder = tmp_path / "data" / "train" / cls
        folder.mkdir(parents=True)
        yy, xx = np.mgrid[0:96, 0:120]
        for k in range(2):
            base = 120 + 60 * np.sin(xx / (7 + k)) * np.cos(yy / (11 + k)) + rng.normal(0, 3, (96, 120))
            PILImage.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"im{k}.png")
    record = train_subband(data=tmp_path / "data", out_dir=tmp_path / "w", model_id="rsc2-smoke", images=4,
                           qualities_per_image=2, per_unit=50, iterations=3, progress=False, log=lambda *_: None)
    assert record["training"]["data"]["cxr_images"] == 4
    codec = Codec.pretrained("rsc2-smoke", weights_dir=tmp_path / "w")
    img = Image(np.clip(rng.normal(500, 80, (50, 70)), 0, 1023).astype(np.uint16), bits_stored=10)
    out = codec.decompress(codec.compress(img, quality=12))
    assert out.shape == img.shape and psnr(img.pixels, out.pixels, 1023) > 30
