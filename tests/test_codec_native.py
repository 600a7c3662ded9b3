"""Lossless and guaranteed-maximum-error coding at native depth (radseal.codec.native, the C engine)."""

from __future__ import annotations

import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import radseal
from radseal.codec import BitstreamError, Codec, CodecError, bitstream
from radseal.codec import native_reference as reference
from radseal.codec.native import MODEL_ID, NativeCodec, default_native, engine
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path

NATIVE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "native"
NATIVE_FILES = sorted(NATIVE_DIR.glob("*.dcm")) if NATIVE_DIR.is_dir() else []
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def codec() -> NativeCodec:
    return default_native()


def check(codec, img: Image, k: int) -> bytes:
    data = codec.compress_native(img, k)
    # any installed codec dispatches a stream of the installed native coder to it
    out = (Codec.pretrained() if codec is default_native() else codec).decompress(data)
    assert out.shape == img.shape and out.bits_stored == img.bits_stored
    assert out.photometric == img.photometric and out.signed == img.signed
    err = np.abs(out.pixels.astype(np.int64) - img.pixels.astype(np.int64))
    if k == 0:
        assert np.array_equal(out.pixels, img.pixels)
    else:
        assert err.max() <= k
    assert out.metadata["max_error"] == k
    return data


@st.composite
def images(draw):
    bits = draw(st.integers(1, 16))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    top = (1 << bits) - 1
    kind = draw(st.sampled_from(["noise", "smooth", "two-level"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        px = rng.integers(0, top + 1, (h, w))
    elif kind == "smooth":
        px = np.clip(rng.integers(0, top + 1) + np.cumsum(rng.integers(-3, 4, (h, w)), axis=1), 0, top)
    else:
        px = np.where(rng.random((h, w)) < 0.5, 0, top)
    photometric = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"]))
    signed = draw(st.booleans())
    return Image(px.astype(np.uint8 if bits <= 8 else np.uint16), bits, photometric, signed=signed)


@SETTINGS
@given(img=images())
def test_lossless_round_trip_is_exact_at_every_depth(codec, img):
    check(codec, img, 0)


@SETTINGS
@given(img=images(), k=st.sampled_from([1, 2, 3, 7, 16, 255, 40000]))
def test_max_error_bound_holds_at_every_depth(codec, img, k):
    check(codec, img, k)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (41, 1), (2, 2)])
@pytest.mark.parametrize("k", [0, 3])
def test_single_rows_columns_and_pixels(codec, shape, k):
    rng = np.random.default_rng(sum(shape))
    check(codec, Image(rng.integers(0, 4096, shape).astype(np.uint16), 12), k)


@pytest.mark.parametrize("value", [0, 1, 65535])
def test_constant_images_cost_only_the_header(codec, value):
    img = Image(np.full((64, 48), value, np.uint16), 16)
    data = check(codec, img, 0)
    assert len(data) < 60
    check(codec, img, 5)


def test_full_scale_spike_on_black(codec):
    px = np.zeros((32, 32), np.uint16)
    px[10, 20] = 65535
    px[0, 0] = 65535
    for k in (0, 1, 100):
        check(codec, Image(px, 16), k)


def _crops(img: Image, size: int = 192):
    h, w = img.shape
    return [img.pixels[:size, :size], img.pixels[h // 2 : h // 2 + size, w // 2 : w // 2 + size], img.pixels[-size:, -size:]]


@pytest.mark.parametrize("name", ["RG1", "RG3"])
def test_real_radiographs_within_the_bound(codec, name):
    img = read_image(sample_path(name))
    for crop in _crops(img):
        sub = img.with_pixels(np.ascontiguousarray(crop))
        for k in (0, 1, 4, 16):
            check(codec, sub, k)


@pytest.mark.skipif(not NATIVE_FILES, reason="../shared/data/native not present (native-depth radiographs)")
@pytest.mark.parametrize("path", NATIVE_FILES, ids=lambda p: p.stem)
def test_native_depth_radiographs_within_the_bound(codec, path):
    img = read_image(path)
    for crop in _crops(img, 128):
        sub = img.with_pixels(np.ascontiguousarray(crop))
        for k in (0, 2, 8):
            check(codec, sub, k)


def test_lossless_beats_jpeg_ls_on_rg3_crop(codec):
    """A sanity floor (the benchmark measures the real numbers): smaller than JPEG-LS lossless."""
    import imagecodecs

    img = read_image(sample_path("RG3"))
    crop = np.ascontiguousarray(img.pixels[600:1000, 500:900])
    ours = len(codec.compress_native(img.with_pixels(crop), 0))
    assert ours < len(imagecodecs.jpegls_encode(crop))


def test_sparse_histogram_is_packed_and_smaller(codec):
    rng = np.random.default_rng(3)
    base = np.clip(2000 + np.cumsum(rng.integers(-2, 3, (64, 64)), axis=0), 0, 4095)
    img = Image((base * 8).clip(0, 65535).astype(np.uint16), 16)  # only multiples of 8 occur
    data = check(codec, img, 0)
    payload = bitstream.unpack(data)[1]
    assert payload[0] & 1  # packed
    x = (img.pixels - img.pixels.min()).astype(np.uint16)
    plain = engine().encode(x.tobytes(), 64, 64, int(x.max()), 0, b"")  # the same values, not packed
    assert len(payload) < 0.8 * len(plain)


# -- the compiled rule against the pure-Python reference --------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_compiled_context_rule_matches_the_python_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 11, 2))
    bits = int(rng.integers(1, 17))
    maxval = (1 << bits) - 1
    if seed % 2:
        px = rng.integers(0, maxval + 1, (h, w))
    else:
        px = np.clip(rng.integers(0, maxval + 1) + np.cumsum(rng.integers(-maxval // 16 - 1, maxval // 16 + 2, (h, w)), 1), 0, maxval)
    px = px.astype(np.uint16)
    for near in (0, 1, 5):
        compiled = [np.frombuffer(b, np.int32).reshape(h, w) for b in engine().trace(px.tobytes(), h, w, maxval, near)]
        for got, want in zip(compiled, reference.trace(px, maxval, near)):
            assert np.array_equal(got, want)


def test_reference_rule_decides_the_bound():
    """The reference's predictions alone reproduce the decoded image: its rule is the coder's rule."""
    rng = np.random.default_rng(9)
    px = rng.integers(0, 1024, (7, 9)).astype(np.uint16)
    near = 2
    pred = reference.trace(px, 1023, near)[0]
    p = (pred + 4) >> 3
    e = px.astype(np.int64) - p
    q = np.where(e >= 0, (e + near) // 5, -((-e + near) // 5))
    recon = np.clip(p + q * 5, 0, 1023)
    out = engine().decode(engine().encode(px.tobytes(), 7, 9, 1023, near, b""), 7, 9, 1023, near, b"")
    assert np.array_equal(np.frombuffer(out, np.uint16).reshape(7, 9), recon)


# -- determinism ------------------------------------------------------------------------------


def test_decoding_is_identical_across_runs_and_threads(codec):
    img = read_image(sample_path("RG1"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[:256, :300]))
    streams = {k: codec.compress_native(sub, k) for k in (0, 3)}
    assert all(codec.compress_native(sub, k) == d for k, d in streams.items())  # encoding is deterministic too
    # and the two other front ends: the 5/3 (lossless) and the value grid (k >= 1)
    streams["5/3"] = codec.compress_native(_lattice_image(np.random.default_rng(6), 64, 72), 0)
    streams["grid"] = _grid_stream(codec, Image((np.arange(96 * 80).reshape(96, 80) % 97 * 11).astype(np.uint16), 12),
                                   2, "grid")
    assert bitstream.unpack(streams["5/3"])[1][0] == 2 and bitstream.unpack(streams["grid"])[1][0] & 4
    results = {}

    def work(i):
        results[i] = [codec.decompress(d).pixels.tobytes() for d in streams.values()]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = results[0]
    assert all(r == first for r in results.values())
    assert first[0] == sub.pixels.astype("<u2").tobytes()


def test_generic_integer_coder_round_trip():
    """The engine's integer coder with caller-chosen contexts (what a coefficient coder builds on)."""
    eng = engine()
    rng = np.random.default_rng(4)
    vals = (rng.laplace(0, 40, 5000)).astype(np.int32)
    vals[:3] = [(1 << 24) - 1, -((1 << 24) - 1), 0]
    ctx = rng.integers(0, eng.NCTX, vals.size).astype(np.int32)
    sctx = rng.integers(0, eng.NSIGN, vals.size).astype(np.int32)
    data = eng.code_ints(vals.tobytes(), ctx.tobytes(), sctx.tobytes(), b"")
    back = np.frombuffer(eng.decode_ints(data, ctx.tobytes(), sctx.tobytes(), b""), np.int32)
    assert np.array_equal(back, vals)
    assert len(data) < vals.size * 1.2  # about 8 bits per Laplace(40) value, not 32
    with pytest.raises(ValueError):
        eng.code_ints(np.array([1 << 24], np.int32).tobytes(), bytes(4), bytes(4), b"")
    with pytest.raises(ValueError):
        eng.code_ints(bytes(4), np.array([eng.NCTX], np.int32).tobytes(), bytes(4), b"")


# -- bad input ---------------------------------------------------------------------------------


def _reseal(data: bytes, payload: bytes) -> bytes:
    """The same header around another payload, with a valid CRC (a forged stream)."""
    header, _ = bitstream.unpack(data)
    return bitstream.pack(header, payload)


def test_bad_arguments_are_refused(codec):
    img = Image(np.zeros((4, 4), np.uint8), 8)
    for bad in (-1, 1.5, True, 70000, "2"):
        with pytest.raises(CodecError):
            codec.compress_native(img, bad)
    with pytest.raises(CodecError):
        Codec.pretrained().compress(img, quality=5, max_error=1)
    with pytest.raises(CodecError):
        codec.compress_native(np.zeros((4, 4)), 0)
    with pytest.raises(CodecError):
        codec.compress_qualities(img, [1])
    with pytest.raises(CodecError):
        codec.compress(img, quality=1)


def test_truncated_and_damaged_streams_fail_cleanly(codec):
    img = read_image(sample_path("RG3"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[700:800, 600:700]))
    for k in (0, 2):
        data = codec.compress_native(sub, k)
        payload = bitstream.unpack(data)[1]
        for cut in (1, 2, 5, 9, len(payload) // 2, len(payload) - 1):
            with pytest.raises(BitstreamError):
                codec.decompress(_reseal(data, payload[:cut]))
        with pytest.raises(BitstreamError):
            codec.decompress(_reseal(data, payload + b"\0"))
        with pytest.raises(BitstreamError):
            codec.decompress(data[:-5] + data[-4:])  # outer CRC
        with pytest.raises(BitstreamError):
            codec.decompress(_reseal(data, bytes([8 | payload[0]]) + payload[1:]))  # unknown flag


def test_forged_value_table_is_refused(codec):
    px = (np.arange(64, dtype=np.uint16).reshape(8, 8) % 5) * 10
    data = codec.compress_native(Image(px, 8), 0)
    payload = bytearray(bitstream.unpack(data)[1])
    assert payload[0] & 1
    bad = payload.copy()
    bad[1:5] = struct.pack("<I", 3)  # wrong number of used values
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes(bad)))
    bad = payload.copy()
    bad[5:9] = struct.pack("<I", 10**6)  # table longer than the payload
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes(bad)))
    with pytest.raises(BitstreamError):  # a packed table on a near-lossless stream
        header = bitstream.unpack(data)[0]
        codec.decompress(bitstream.pack(header.__class__(**{**header.__dict__, "quality": 2}), bytes(payload)))


def test_fuzzed_streams_never_crash(codec):
    """Random byte flips inside the payload, with the CRCs made valid again: a clean error or an image, never a crash."""
    rng = np.random.default_rng(11)
    img = read_image(sample_path("RG1"))
    outcomes = set()
    for k in (0, 1, 9):
        sub = img.with_pixels(np.ascontiguousarray(img.pixels[900:940, 400:450]))
        data = codec.compress_native(sub, k)
        payload = bitstream.unpack(data)[1]
        for _ in range(60):
            p = bytearray(payload)
            for i in rng.integers(0, len(p), int(rng.integers(1, 4))):
                p[i] = int(rng.integers(0, 256))
            try:
                out = codec.decompress(_reseal(data, bytes(p)))
                outcomes.add("decoded")
                assert out.shape == sub.shape
            except BitstreamError:
                outcomes.add("refused")
    assert "refused" in outcomes


def test_engine_decodes_garbage_without_crashing():
    eng = engine()
    rng = np.random.default_rng(5)
    for n in (0, 1, 5, 64, 4096):
        junk = rng.integers(0, 256, n).astype(np.uint8).tobytes()
        for maxval, near in ((1, 0), (1023, 0), (65535, 3), (65535, 65535)):
            try:
                out = eng.decode(junk, 17, 23, maxval, near, b"")
                assert max(np.frombuffer(out, np.uint16)) <= maxval
            except ValueError:
                pass
    with pytest.raises(ValueError):
        eng.decode(b"", 0, 5, 10, 0, b"")
    with pytest.raises(ValueError):
        eng.encode(np.array([11], np.uint16).tobytes(), 1, 1, 10, 0, b"")  # value above maxval
    with pytest.raises(ValueError):
        eng.encode(bytes(2), 1, 1, 10, 0, b"\x01\x00")  # initial table of the wrong size


def test_stream_names_its_model_and_old_streams_still_decode(codec):
    img = read_image(sample_path("RG3"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[700:764, 600:664]))
    data = codec.compress_native(sub, 0)
    assert bitstream.unpack(data)[0].model_id == MODEL_ID
    lossy = Codec.pretrained().compress(sub, quality=8)  # the wavelet codec's stream
    assert codec.decompress(lossy).shape == sub.shape  # the native coder dispatches it back


# -- DICOM and the pipeline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys():
    from radseal.seal import DeviceKey, ReceiverKey

    r = ReceiverKey.generate()
    d = DeviceKey.generate()
    return r, d


def _round_trip_dataset(img, max_error, keys, tamper_source=False):
    from radseal.io.derived import derived_dataset
    from radseal.pipeline import open_image, seal_image

    receiver, device = keys
    if tamper_source:
        img = img.with_pixels(img.pixels)
        img.metadata = {**img.metadata, "codec_max_error": 0}
    sealed = seal_image(img, receiver.public_key(), device, max_error=max_error)
    opened = open_image(sealed.data, receiver, device.public_key())
    ds = derived_dataset(opened.image, opened.dicom_header, payload_bytes=len(opened.payload),
                         model_id=opened.metadata["codec"]["name"])
    return opened, ds


def test_lossless_derived_dicom_says_00(keys):
    img = read_image(sample_path("RG3"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[700:764, 600:664]))
    opened, ds = _round_trip_dataset(sub, 0, keys)
    assert np.array_equal(opened.image.pixels, sub.pixels)
    assert ds.LossyImageCompression == "00"
    assert "LossyImageCompressionMethod" not in ds and "LossyImageCompressionRatio" not in ds
    assert ds.DerivationDescription.startswith("Lossless compression")


def test_near_lossless_derived_dicom_says_01_with_the_bound(keys):
    from radseal.io.derived import NEAR_LOSSLESS_METHOD

    img = read_image(sample_path("RG3"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[700:764, 600:664]))
    opened, ds = _round_trip_dataset(sub, 3, keys)
    assert np.abs(opened.image.pixels.astype(int) - sub.pixels).max() <= 3
    assert ds.LossyImageCompression == "01"
    methods = ds.LossyImageCompressionMethod
    assert (methods if isinstance(methods, str) else list(methods)[-1]) == NEAR_LOSSLESS_METHOD
    assert len(NEAR_LOSSLESS_METHOD) <= 16  # a CS value
    assert "maximum absolute error 3" in ds.DerivationDescription


def test_sender_cannot_claim_lossless_for_a_lossy_stream(keys):
    """A 'codec_max_error' a sender writes into its metadata is ignored: the decoder decides."""
    img = read_image(sample_path("RG3"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[700:764, 600:664]))
    opened, ds = _round_trip_dataset(sub, None, keys, tamper_source=True)
    assert ds.LossyImageCompression == "01"
    assert "codec_max_error" not in opened.image.metadata


def test_cli_encode_lossless_and_max_error(tmp_path, capsys, rg3_path):
    from radseal.cli import main

    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    assert main(["keygen", "receiver", "hospital", "--out", str(keys_dir)]) == 0
    assert main(["keygen", "device", "unit", "--out", str(keys_dir)]) == 0
    img = read_image(rg3_path)
    from radseal.io import write_image

    write_image(img.with_pixels(np.ascontiguousarray(img.pixels[800:864, 700:780])), tmp_path / "crop.dcm")
    base = ["encode", str(tmp_path / "crop.dcm"), "--to", str(keys_dir / "hospital.pub"), "--sign", str(keys_dir / "unit.key")]
    assert main(base + ["--lossless", "-o", str(tmp_path / "a.rsl")]) == 0
    assert "mode: lossless" in capsys.readouterr().out
    assert main(["decode", str(tmp_path / "a.rsl"), "--key", str(keys_dir / "hospital.key"), "--trust",
                 str(keys_dir / "unit.pub"), "-o", str(tmp_path / "a.dcm")]) == 0
    assert "mode: lossless" in capsys.readouterr().out
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    assert ds.LossyImageCompression == "00"
    assert np.array_equal(ds.pixel_array.astype(np.uint16), img.pixels[800:864, 700:780])
    assert main(base + ["--max-error", "2", "-o", str(tmp_path / "b.rsl")]) == 0
    assert "within 2" in capsys.readouterr().out
    for bad in (["--lossless", "--quality", "5"], ["--max-error", "-1"], ["--lossless", "--max-error", "2"]):
        assert main(base + bad + ["-o", str(tmp_path / "c.rsl")]) != 0
        err = capsys.readouterr().err
        assert err.startswith("radseal: error:") and "Traceback" not in err
        assert not (tmp_path / "c.rsl").exists()


# -- what fit-codec learns ---------------------------------------------------------------------


def test_fitted_initial_table_is_valid_and_used():
    from radseal.codec.native_fit import accumulate, initial_table, left_half

    rng = np.random.default_rng(2)
    imgs = [np.clip(500 + np.cumsum(rng.integers(-9, 10, (40, 60)), 1), 0, 1023).astype(np.uint16) for _ in range(2)]
    num, den = accumulate(imgs, max_errors=(0, 2))
    table = initial_table(num, den)
    assert (den > 0).sum() > 20
    assert table[den == 0].tolist() == [32768] * int((den == 0).sum())
    fitted = NativeCodec(table)
    img = Image(imgs[0], 10)
    check(fitted, img, 0)
    assert fitted.compress_native(img, 0) != NativeCodec(None).compress_native(img, 0)
    assert left_half(np.zeros((3, 9))).shape == (3, 4)
    with pytest.raises(radseal.codec.WeightsError):
        NativeCodec(np.zeros(5, np.uint16))


def test_stream_is_bound_to_its_tables():
    """A stream decoded with other initial tables does not silently pass: the value checksum refuses it."""
    rng = np.random.default_rng(8)
    img = Image(np.clip(300 + np.cumsum(rng.integers(-5, 6, (50, 50)), 0), 0, 1023).astype(np.uint16), 10)
    skewed = np.full(engine().NBITS, 60000, np.uint16)
    data = NativeCodec(skewed).compress_native(img, 0)
    with pytest.raises(BitstreamError):
        NativeCodec(None).decompress(data)


def test_crc_covers_the_decoded_values(codec):
    img = Image(np.arange(100, dtype=np.uint16).reshape(10, 10), 8)
    data = codec.compress_native(img, 0)
    payload = bytearray(bitstream.unpack(data)[1])
    payload[1:5] = struct.pack("<I", zlib.crc32(b"x"))
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes(payload)))


# -- bpp= beyond the lossy codec's top quality ---------------------------------------------------


def test_bpp_continues_past_the_top_quality_into_bounded_error_and_lossless():
    img = read_image(sample_path("RG1"))
    sub = img.with_pixels(np.ascontiguousarray(img.pixels[600:728, 1200:1328]))
    lossy = Codec.pretrained()
    n = sub.pixels.size

    def sq_err(data):
        return float(np.sum((lossy.decompress(data).pixels.astype(np.float64) - sub.pixels) ** 2))

    top = lossy.compress(sub, quality=lossy.qualities[-1])
    low = lossy.compress(sub, bpp=0.5)
    assert bitstream.unpack(low)[0].model_id == lossy.model_id  # below the top: the lossy ladder as before
    more = lossy.compress(sub, bpp=8 * len(top) / n + 1.5)
    header = bitstream.unpack(more)[0]
    assert header.model_id == MODEL_ID  # a native-depth stream ...
    assert len(more) * 8 / n <= 8 * len(top) / n + 1.5  # ... that fits ...
    # ... and is more faithful than the top quality, or as faithful (the top quality reaches
    # near-lossless since the ladder goes past 16) in fewer bytes
    assert sq_err(more) < sq_err(top) or (sq_err(more) == sq_err(top) and len(more) < len(top))
    assert np.abs(lossy.decompress(more).pixels.astype(np.int64) - sub.pixels).max() <= header.quality
    exact = lossy.compress(sub, bpp=16)
    assert bitstream.unpack(exact)[0].quality == 0
    assert np.array_equal(lossy.decompress(exact).pixels, sub.pixels)


# -- streams of earlier versions ----------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "native"
FIXTURE_NAMES = sorted(json.loads((FIXTURES / "manifest.json").read_text()))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_committed_rsn1_streams_still_decode_exactly(name):
    """Streams made by the first rsn1 coder (small synthetic images, lossless, packed, k >= 1,
    one row) decode to exactly the values that coder decoded them to: a change of the prediction,
    contexts or tables that is not selected by a new format field fails here."""
    meta = json.loads((FIXTURES / "manifest.json").read_text())[name]
    data = (FIXTURES / f"{name}.rsn1").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy", allow_pickle=False)
    assert bitstream.unpack(data)[0].model_id == MODEL_ID
    out = Codec.pretrained().decompress(data)
    assert out.pixels.dtype == expected.dtype and np.array_equal(out.pixels, expected)
    assert out.bits_stored == meta["bits_stored"] and out.photometric == meta["photometric"]
    assert out.signed == meta["signed"] and out.metadata["max_error"] == meta["max_error"]


# -- the reversible 5/3 front end (flag bit 1) ----------------------------------------------------


def _lattice_image(rng, h, w, bits=16):
    """An image whose 5/3 detail coefficients all sit on |v| = 2 mod 4, as a decoded lossy JPEG 2000
    image with two bit planes dropped does: the case the front end is for."""
    from radseal.codec.native import wavelet53_inverse, wavelet53_shapes

    (lh_, lw_), shapes = wavelet53_shapes(h, w, 1)
    yy, xx = np.mgrid[0:lh_, 0:lw_]
    ll = 20000 + 30 * yy + 20 * xx + rng.integers(-300, 301, (lh_, lw_))
    bands = [np.where(rng.random(s) < 0.03, 0, rng.choice([-1, 1], s) * (4 * rng.geometric(0.02, s) - 2)) for s in shapes]
    x = wavelet53_inverse(ll, bands, 1)
    x = x - x.min()
    assert x.max() < (1 << bits)
    return Image(x.astype(np.uint16), bits)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_wavelet53_is_exactly_invertible_at_every_size(levels):
    from radseal.codec.native import wavelet53_forward, wavelet53_inverse, wavelet53_shapes

    rng = np.random.default_rng(levels)
    for h in range(1, 10):
        for w in range(1, 10):
            x = rng.integers(0, 1 << 16, (h, w))
            ll, bands = wavelet53_forward(x, levels)
            assert (ll.shape, [b.shape for b in bands]) == wavelet53_shapes(h, w, levels)
            assert np.array_equal(wavelet53_inverse(ll, bands, levels), x)


def test_wavelet53_matches_jpeg2000_reversible_lifting():
    """One level on a short signal, written out from ISO 15444-1 F.3.8 (5/3 reversible, symmetric extension)."""
    from radseal.codec.native import _lift_forward

    x = np.array([[3, 9, 4, 20, 7, 1, 8]])
    ext = lambda i: x[0, -i] if i < 0 else (x[0, 2 * (x.size - 1) - i] if i >= x.size else x[0, i])  # noqa: E731
    d = [ext(2 * i + 1) - (ext(2 * i) + ext(2 * i + 2)) // 2 for i in range(-1, 4)]  # d[-1] .. d[3]
    s = [ext(2 * i) + (d[i] + d[i + 1] + 2) // 4 for i in range(4)]
    lo, hi = _lift_forward(x)
    assert lo.tolist() == [s] and hi.tolist() == [d[1:4]]


def test_lattice_image_takes_the_wavelet_front_end_and_is_smaller(codec):
    img = _lattice_image(np.random.default_rng(3), 96, 80)
    data = check(codec, img, 0)
    assert bitstream.unpack(data)[1][0] & 2  # the 5/3 front end was chosen
    direct = codec._encode_values(img.pixels.copy(), int(img.pixels.max()), 0, front_end="direct")
    assert len(bitstream.unpack(data)[1]) < 0.9 * len(direct)


@SETTINGS
@given(img=images())
def test_wavelet_front_end_round_trip_is_exact_at_every_depth(codec, img):
    px = img.pixels
    low, high = int(px.min()), int(px.max())
    x = np.subtract(px, low, dtype=np.uint16)
    if high != low and codec._encode_wavelet(x, 1) is None:
        # only a low-pass band that leaves 16 bits (a range wider than 15 bits) has no 5/3 stream; the encoder
        # then codes the image directly
        assert high - low > 32767
        return
    payload = codec._encode_values(x, high - low, 0, front_end="wavelet")
    header = bitstream.Header(model_id=codec.model_id, height=img.height, width=img.width, bits_stored=img.bits_stored,
                              photometric=img.photometric, signed=bool(img.signed), quality=0, low=low, high=high)
    out = codec.decompress(bitstream.pack(header, payload))
    assert np.array_equal(out.pixels, img.pixels)
    assert high == low or payload[0] & 2  # constant images code no pixels at all


@pytest.mark.parametrize("seed", range(4))
def test_compiled_band_contexts_match_the_python_reference(seed):
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(v) for v in rng.integers(0, 9, 2)) for _ in range(3)]
    bands = [(rng.choice([-1, 1], s) * (4 * rng.integers(0, 40, s) + rng.integers(0, 4, s))).astype("<i4") for s in shapes]
    values = np.concatenate([b.ravel() for b in bands]).astype("<i4")
    shp = np.array([v for s in shapes for v in s], "<i4").tobytes()
    got = [np.frombuffer(t, "<i4") for t in engine().band_trace(values.tobytes(), shp)]
    want = [np.concatenate([reference.band_contexts(b)[i].ravel() for b in bands]) for i in range(3)]
    for g, w_ in zip(got, want):
        assert np.array_equal(g, w_)
    assert np.array_equal(np.frombuffer(engine().band_decode(engine().band_encode(values.tobytes(), shp), shp), "<i4"), values)


def test_damaged_wavelet_streams_fail_cleanly(codec):
    img = _lattice_image(np.random.default_rng(4), 40, 36)
    data = codec.compress_native(img, 0)
    payload = bitstream.unpack(data)[1]
    assert payload[0] & 2
    for cut in (1, 5, 6, 10, 18, len(payload) // 2, len(payload) - 1):
        with pytest.raises(BitstreamError):
            codec.decompress(_reseal(data, payload[:cut]))
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, payload + b"\0"))
    bad = bytearray(payload)
    bad[5] = 0  # zero levels
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes(bad)))
    with pytest.raises(BitstreamError):  # the front end on a near-lossless stream
        header = bitstream.unpack(data)[0]
        codec.decompress(bitstream.pack(header.__class__(**{**header.__dict__, "quality": 2}), payload))
    rng = np.random.default_rng(12)
    outcomes = set()
    for _ in range(80):
        p = bytearray(payload)
        for i in rng.integers(5, len(p), int(rng.integers(1, 4))):
            p[i] = int(rng.integers(0, 256))
        try:
            assert codec.decompress(_reseal(data, bytes(p))).shape == img.shape
            outcomes.add("decoded")
        except BitstreamError:
            outcomes.add("refused")
    assert "refused" in outcomes


# -- the value grid for k >= 1 (flag bit 2) ------------------------------------------------------


def _grid_stream(codec, img, k, front_end):
    px = img.pixels
    low, high = int(px.min()), int(px.max())
    payload = codec._encode_values(np.subtract(px, low, dtype=np.uint16), high - low, k, front_end=front_end)
    header = bitstream.Header(model_id=codec.model_id, height=img.height, width=img.width, bits_stored=img.bits_stored,
                              photometric=img.photometric, signed=bool(img.signed), quality=k, low=low, high=high)
    return bitstream.pack(header, payload)


@SETTINGS
@given(img=images(), k=st.sampled_from([1, 2, 3, 7, 40]))
def test_value_grid_keeps_the_bound_at_every_depth(codec, img, k):
    out = codec.decompress(_grid_stream(codec, img, k, "grid"))
    assert int(np.abs(out.pixels.astype(np.int64) - img.pixels.astype(np.int64)).max()) <= k
    assert out.metadata["max_error"] == k


@pytest.mark.parametrize("k", [1, 2, 5])
def test_value_grid_is_the_fewest_representatives_within_k(k):
    from radseal.codec.native import _value_grid

    rng = np.random.default_rng(k)
    for used in (np.arange(50), np.unique(rng.integers(0, 4096, 300)), np.array([0, 3, 4, 9, 30, 31, 32, 33])):
        reps, index = _value_grid(used, k)
        assert np.all(np.abs(reps[index].astype(np.int64) - used) <= k)
        assert np.isin(reps, used).all() and np.all(np.diff(reps.astype(np.int64)) > 0)
        # the fewest possible, by exhaustive dynamic programming: best[i] covers used[i:] (a cover can be taken
        # as contiguous blocks, each with its representative inside the block's reach)
        n = used.size
        best = [0] * (n + 1)
        for i in range(n - 1, -1, -1):
            best[i] = min(1 + best[int(np.searchsorted(used, used[r] + k, side="right"))]
                          for r in range(i, n) if used[r] - used[i] <= k)
        assert reps.size == best[0]


def test_sparse_histogram_near_lossless_takes_the_value_grid_and_is_smaller(codec):
    """820-of-4096-style data: stored values on a sparse, irregular set. At k = 1 a prediction-domain step of 3
    lands between the used values; the grid keeps what histogram packing gains."""
    rng = np.random.default_rng(21)
    levels = np.unique(np.round(np.cumsum(rng.uniform(3, 7, 700))).astype(np.int64))
    levels = levels[levels < 4096]
    yy, xx = np.mgrid[0:128, 0:128]
    idx = np.clip((yy * 2 + xx + rng.normal(0, 6, (128, 128))).round(), 0, levels.size - 1).astype(int)
    img = Image(levels[idx].astype(np.uint16), 12)
    data = check(codec, img, 1)
    payload = bitstream.unpack(data)[1]
    assert payload[0] & 4
    pred = _grid_stream(codec, img, 1, "prediction")
    assert len(data) < 0.9 * len(pred)


def test_damaged_value_grid_streams_fail_cleanly(codec):
    rng = np.random.default_rng(22)
    img = Image((rng.integers(0, 200, (24, 30)) * 7).astype(np.uint16), 12)
    data = _grid_stream(codec, img, 2, "grid")
    header, payload = bitstream.unpack(data)
    assert payload[0] & 4
    with pytest.raises(BitstreamError):  # a value grid on a lossless stream
        codec.decompress(bitstream.pack(header.__class__(**{**header.__dict__, "quality": 0}), payload))
    with pytest.raises(BitstreamError):  # together with a packed table
        codec.decompress(_reseal(data, bytes([payload[0] | 1]) + payload[1:]))
    bad = bytearray(payload)
    bad[1:5] = struct.pack("<I", 10**6)  # more representatives than values
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes(bad)))
    for cut in (1, 4, 9, len(payload) // 2, len(payload) - 1):
        with pytest.raises(BitstreamError):
            codec.decompress(_reseal(data, payload[:cut]))


def test_wavelet_front_end_on_packed_indices_is_refused(codec):
    img = _lattice_image(np.random.default_rng(5), 20, 22)
    data = codec.compress_native(img, 0)
    payload = bitstream.unpack(data)[1]
    assert payload[0] == 2
    with pytest.raises(BitstreamError):
        codec.decompress(_reseal(data, bytes([3]) + payload[1:]))
