"""The rsc3 loop filter (radseal.codec.loopfilter) and rsc3's format-1 payload fields."""

from __future__ import annotations

import numpy as np
import pytest

from radseal.codec import BitstreamError, Codec, bitstream, loopfilter
from radseal.codec.seq import MODEL_ID, SeqCodec
from radseal.io import read_image
from radseal.io.samples import sample_path


@pytest.fixture(scope="module")
def codec() -> SeqCodec:
    return Codec.pretrained(MODEL_ID)


@pytest.fixture(scope="module")
def crop():
    img = read_image(sample_path("RG1"))
    return img.with_pixels(np.ascontiguousarray(img.pixels[500:756, 600:920]))


def _blurred(rng, shape=(96, 120)):
    x = rng.normal(128, 40, shape).astype(np.float32)
    # a known linear degradation a symmetric filter can undo in part: blur plus an even/odd-row bias
    y = (x + np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1)) / 5
    return x, y.astype(np.float32)


def test_fit_lowers_the_error_and_parameters_round_trip():
    x, y = _blurred(np.random.default_rng(3))
    params = loopfilter.fit(y, x, lam=0.0)
    assert params is not None
    data = loopfilter.encode_params(params)
    back, end = loopfilter.decode_params(b"\x07" + data + b"tail", 1)
    assert end == 1 + len(data)
    assert back["thresholds"] == params["thresholds"] and back["phases"] == params["phases"]
    assert np.array_equal(back["coef"], params["coef"]) and np.array_equal(back["shifts"], params["shifts"])
    z = loopfilter.apply(y, back)
    assert np.mean((z - x) ** 2) < 0.9 * np.mean((y - x) ** 2)


def test_fit_sends_nothing_when_it_cannot_pay():
    x, y = _blurred(np.random.default_rng(4))
    assert loopfilter.fit(y, y.copy(), lam=0.0) is None  # nothing to correct
    assert loopfilter.fit(y, x, lam=1e9) is None  # bits too dear
    assert loopfilter.encode_params(None) == b"\x00"
    assert loopfilter.apply(y, None) is y


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (2, 2), (3, 50), (7, 5)])
def test_tiny_images(shape):
    rng = np.random.default_rng(5)
    x = rng.normal(100, 30, shape).astype(np.float32)
    y = x + rng.normal(0, 3, shape).astype(np.float32)
    p = loopfilter.fit(y, x, lam=0.0)
    assert loopfilter.apply(y, p).shape == shape


def test_malformed_parameters_are_refused():
    good = loopfilter.encode_params(loopfilter.fit(*_blurred(np.random.default_rng(6))[::-1], lam=0.0))
    for bad in (good[:-1], b"\x11\x01", b"\x02\x03" + good[2:], good[:1], b""):
        with pytest.raises(BitstreamError):
            loopfilter.decode_params(bad, 0)


def test_format1_carries_the_filter_and_it_lowers_the_error(codec, crop):
    filtering = SeqCodec(codec.model, loop_filter={})  # the encoder sends none by default (cost)
    assert codec.decompress(codec.compress(crop, quality=4)) is not None
    assert codec.read_payload(bitstream.unpack(codec.compress(crop, quality=4))[1], *crop.shape)[2] is None
    data = filtering.compress(crop, quality=4)
    header, payload = bitstream.unpack(data)
    assert payload[0] == 1
    sym, offs, params, weights = codec.read_payload(payload, header.height, header.width)
    assert params is not None and weights is not None  # the default sends band weights
    y = codec.reconstruct(sym, offs, header.height, header.width, header.quality, weights)
    from radseal.codec.api import normalized

    x = normalized(crop.pixels, int(crop.pixels.min()), int(crop.pixels.max())) * 255
    before = np.mean((y - x) ** 2)
    after = np.mean((loopfilter.apply(y, params) - x) ** 2)
    assert after < before
    out = codec.decompress(data)
    assert out.shape == crop.shape and out.bits_stored == crop.bits_stored


def test_format1_band_weights_round_trip(codec, crop):
    weighted = SeqCodec(codec.model, band_weights=(1.25,))
    data = weighted.compress(crop, quality=12)
    header, payload = bitstream.unpack(data)
    *_, weights = codec.read_payload(payload, header.height, header.width)
    assert weights is not None and weights[-1] == 80 and set(weights[:-1]) == {64}  # 1.25 x 64 on the finest
    out = codec.decompress(data)  # any rsc3 codec decodes it: the weights travel in the stream
    unweighted = SeqCodec(codec.model, band_weights=None)
    plain_data = unweighted.compress(crop, quality=12)
    assert codec.read_payload(bitstream.unpack(plain_data)[1], header.height, header.width)[3] is None
    # coarser steps on the finest level: fewer nonzero symbols there (the last three bands)
    nz = [np.count_nonzero(codec.read_symbols(bitstream.unpack(d)[1], header.height, header.width)[0][-3 * 160 * 128 :])
          for d in (data, plain_data)]
    assert nz[0] < nz[1]
    plain = codec.decompress(plain_data)
    err = [np.mean((o.pixels.astype(float) - crop.pixels) ** 2) for o in (out, plain)]
    assert err[0] > err[1] * 0.9 and err[0] < err[1] * 3  # a coarser finest level, decoded as such


def test_format0_encoder_still_writes_format0(codec, crop):
    old = SeqCodec(codec.model, fmt=0, loop_filter=None, rdo_levels=False)
    data = old.compress(crop, quality=7)
    assert bitstream.unpack(data)[1][0] == 0
    new = codec.compress(crop, quality=7)
    assert bitstream.unpack(new)[1][0] == 1
    a, b = codec.decompress(data), codec.decompress(new)
    assert a.shape == b.shape == crop.shape
    span = float(crop.pixels.max()) - float(crop.pixels.min())
    for out in (a, b):  # both decode to the image, within a small fraction of its range
        assert np.mean(np.abs(out.pixels.astype(float) - crop.pixels)) < 0.01 * span


def test_format1_engine_differs_from_format0(codec):
    """The format byte selects the engine's model (the APM): the same symbols cost different bytes,
    and a format-1 stream read as format 0 is refused."""
    from radseal.codec.seq import band_shapes, engine

    rng = np.random.default_rng(8)
    shapes = band_shapes(64, 64)
    n = sum(a * b for a, b in shapes)
    sym = (rng.laplace(0, 0.7, n)).round().astype(np.int32)
    shp = np.asarray(shapes, np.int32).ravel().tobytes()
    e = engine()
    s0, _ = e.seq_encode(sym.tobytes(), shp, b"", b"", 0, 0)
    s1, _ = e.seq_encode(sym.tobytes(), shp, b"", b"", 0, 1)
    assert s0 != s1
    assert np.array_equal(np.frombuffer(e.seq_decode(s1, shp, 1), np.int32), sym)
    assert np.array_equal(np.frombuffer(e.seq_decode(s0, shp, 0), np.int32), sym)
    try:
        wrong = np.frombuffer(e.seq_decode(s1, shp, 0), np.int32)
    except ValueError:
        return
    assert not np.array_equal(wrong, sym)
