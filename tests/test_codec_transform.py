"""The compiled pixel side of rsc3 (engine section 6) against the numpy reference (wavelet.py, seq.py's old arithmetic)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from radseal.codec import Codec, wavelet
from radseal.codec.api import normalized, stored
from radseal.codec.seq import MODEL_ID, SeqCodec, band_shapes, band_steps, engine, flatten
from radseal.codec.subband import LEVELS, PIXEL_SCALE
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path

SHAPES = [(1, 1), (1, 9), (9, 1), (2, 2), (2, 3), (3, 2), (5, 7), (17, 33), (64, 65), (129, 3), (100, 257)]


@pytest.fixture(scope="module")
def codec() -> SeqCodec:
    return Codec.pretrained(MODEL_ID)


@pytest.fixture(scope="module")
def rg1_crop() -> Image:
    img = read_image(sample_path("RG1"))
    return img.with_pixels(np.ascontiguousarray(img.pixels[500:883, 640:1001]))  # odd sides


def _tol(dtype) -> float:
    return 1e-4 if dtype == np.float32 else 1e-10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_compiled_transform_matches_numpy(shape, dtype):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x = (rng.random(shape) * 255).astype(dtype)
    ref = wavelet.forward(x, LEVELS)
    y = x.copy()
    levels = engine().wt_forward(y, shape[0], shape[1], LEVELS, dtype == np.float64)
    assert levels == len(ref.details)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, wavelet.pack(ref), rtol=0, atol=_tol(dtype) * 255)
    # inverse: against numpy's inverse of the same pyramid, and back to the pixels
    z = y.copy()
    engine().wt_inverse(z, shape[0], shape[1], LEVELS, dtype == np.float64)
    np.testing.assert_allclose(z, wavelet.inverse(wavelet.unpack(y, LEVELS)), rtol=0, atol=_tol(dtype) * 255)
    np.testing.assert_allclose(z, x, rtol=0, atol=_tol(dtype) * 255)


def test_pack_and_unpack_are_inverse():
    x = np.random.default_rng(0).random((37, 50))
    p = wavelet.forward(x, LEVELS)
    q = wavelet.unpack(wavelet.pack(p), LEVELS)
    assert np.array_equal(q.ll, p.ll)
    for a, b in zip(q.details, p.details):
        for o in wavelet.ORIENTATIONS:
            assert np.array_equal(a[o], b[o])


def test_compiled_quantizer_gives_numpy_symbols_exactly(codec, rg1_crop):
    h, w = rg1_crop.shape
    x01 = normalized(rg1_crop.pixels, int(rg1_crop.pixels.min()), int(rg1_crop.pixels.max()))
    pyr = codec.model.analyse(x01)
    packed = codec._analyse(x01)
    np.testing.assert_allclose(packed, wavelet.pack(pyr), rtol=0, atol=1e-3)
    for q in (1, 7, 16):
        steps = band_steps(codec, q, h, w)
        sym = np.empty(h * w, np.int32)
        rdo = np.empty(h * w, np.int32)
        engine().seq_quantize(wavelet.pack(pyr), h, w, LEVELS, False, steps, codec.model.rounding, sym, rdo)
        assert np.array_equal(sym, flatten(codec.model.quantize(pyr, q)))
        # |c| / step in 1/256, as seq.py computed it in numpy
        _, dsteps = codec.model.band_steps(q, len(pyr.details))
        u = [np.zeros(pyr.ll.size)] + [np.abs(d[o]).ravel().astype(np.float64) / s[o] for d, s in zip(pyr.details, dsteps) for o in wavelet.ORIENTATIONS]
        assert np.array_equal(rdo, np.minimum(np.rint(np.concatenate(u) * 256), 1 << 20).astype(np.int32))


def _numpy_decode(codec, payload, h, w, quality) -> np.ndarray:
    """rsc3's decoder as it was in numpy (dequantization, wavelet.inverse), pixels scaled to 0..1."""
    sym, offs = codec.read_symbols(payload, h, w)
    m = codec.model
    shapes = band_shapes(h, w)
    bands, pos = [], 0
    for bh, bw in shapes:
        bands.append(sym[pos : pos + bh * bw].reshape(bh, bw))
        pos += bh * bw
    nlev = (len(shapes) - 1) // 3
    ll_step, steps = m.band_steps(quality, nlev)
    rnd = np.float32(m.rounding)
    details = []
    for i in range(nlev):
        out = {}
        for oi, o in enumerate(wavelet.ORIENTATIONS):
            b = 1 + 3 * i + oi
            mag = np.abs(bands[b])
            theta = np.where(mag == 1, np.float32(offs[b, 0] / 256.0), np.float32(offs[b, 1] / 256.0))
            level = (mag.astype(np.float32) - rnd + theta) * np.float32(steps[i][o])
            out[o] = np.where(mag > 0, np.copysign(level, bands[b]), np.float32(0)).astype(np.float32)
        details.append(out)
    ll = (bands[0].astype(np.float64) * ll_step).astype(np.float32)
    return wavelet.inverse(wavelet.Pyramid(ll=ll, details=details)) / PIXEL_SCALE


def test_decoded_pixels_within_one_stored_unit_of_the_numpy_decoder(codec, rg1_crop):
    from radseal.codec import bitstream

    h, w = rg1_crop.shape
    codec = SeqCodec(codec.model, band_weights=None)  # the reference below knows no band weights
    for q in (2, 8, 14):
        data = codec.compress(rg1_crop, quality=q)
        header, payload = bitstream.unpack(data)
        ref = _numpy_decode(codec, payload, h, w, q)
        new = codec._decode(payload, h, w, q)
        np.testing.assert_allclose(new, ref, rtol=0, atol=1e-5)
        a = stored(ref, header.low, header.high, np.uint16).astype(np.int64)
        b = codec.decompress(data).pixels.astype(np.int64)
        assert np.abs(a - b).max() <= 1


def test_stored_matches_the_whole_array_formula():
    rng = np.random.default_rng(3)
    x = (rng.random((300, 1100)) * 1.2 - 0.1).astype(np.float32)  # crosses both clip limits and several blocks
    for low, high, dtype in [(0, 255, np.uint8), (17, 4000, np.uint16), (5, 5, np.uint8)]:
        span = float(max(high - low, 1))
        ref = np.clip(np.rint(x.astype(np.float64) * span + low), low, high).astype(dtype)
        assert np.array_equal(stored(x, low, high, dtype), ref)


def test_engine_pixel_functions_refuse_mismatched_buffers():
    e = engine()
    x = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError):
        e.wt_forward(x, 5, 5, LEVELS, False)  # 25 values expected, 20 given
    with pytest.raises(ValueError):
        e.wt_forward(x, 4, 5, LEVELS, True)  # float64 expected
    with pytest.raises(TypeError):
        e.wt_forward(x.tobytes(), 4, 5, LEVELS, False)  # not writable
    steps = np.ones(len(band_shapes(4, 5)), np.float64)
    sym = np.zeros(20, np.int32)
    with pytest.raises(ValueError):
        e.seq_quantize(x, 4, 5, LEVELS, False, steps[:-1], 0.4, sym, sym.copy())
    with pytest.raises(ValueError):
        e.seq_quantize(x, 4, 5, LEVELS, False, -steps, 0.4, sym, sym.copy())
    with pytest.raises(ValueError):
        e.seq_dequantize(sym, 4, 5, LEVELS, False, steps, 0.4, bytes(3), x)


def test_compiled_transform_is_the_same_in_concurrent_threads():
    x = (np.random.default_rng(9).random((301, 203)) * 255).astype(np.float32)
    ref = x.copy()
    engine().wt_forward(ref, 301, 203, LEVELS, False)
    outs = [x.copy() for _ in range(4)]
    threads = [threading.Thread(target=engine().wt_forward, args=(o, 301, 203, LEVELS, False)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(o, ref) for o in outs)


_MEMORY_CHILD = r"""
import sys
import numpy as np
from radseal.codec import Codec
from radseal.image import Image

mode, side, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
px = np.empty((side, side), np.uint8)
for r in range(side):  # a ramp with noise, built a row at a time (no image-sized temporaries)
    px[r] = ((r + np.arange(side)) * 255 // (2 * side) + rng.integers(0, 8, side)).clip(0, 255)
img = Image(pixels=px, bits_stored=8, photometric="MONOCHROME2", signed=False)
codec = Codec.pretrained()
codec.decompress(codec.compress(img.with_pixels(np.ascontiguousarray(px[:64, :64])), quality=10))  # warm-up
if mode == "encode":
    open(path, "wb").write(codec.compress(img, quality=10))
elif mode == "decode":
    codec.decompress(open(path, "rb").read())
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def test_encode_and_decode_memory_per_pixel_is_bounded(tmp_path):
    """Peak resident memory of a process that encodes (decodes) a 1536 x 1536 image, less that of
    the same process without the call, per pixel: encode <= 16 bytes, decode <= 10 (the decoded
    image included); the whole-image float64 temporaries of the numpy path took about 55 and 25."""
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux /proc/self/status (VmHWM)")
    side, stream = 1536, str(tmp_path / "s.rsc")

    def peak(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, mode, str(side), stream], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    base, enc, dec = peak("none"), peak("encode"), peak("decode")
    assert enc - base <= 16 * side * side, (enc - base) / side**2
    assert dec - base <= 10 * side * side, (dec - base) / side**2
