"""The sequential wavelet coder (rsc3, radseal.codec.seq; the C engine's section 5)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from radseal.codec import BitstreamError, Codec, bitstream
from radseal.codec import seq_reference as reference
from radseal.codec.seq import MODEL_ID, SeqCodec, band_shapes, engine, flatten
from radseal.image import Image
from radseal.io import read_image
from radseal.io.samples import sample_path


@pytest.fixture(scope="module")
def codec() -> SeqCodec:
    return Codec.pretrained(MODEL_ID)


@pytest.fixture(scope="module")
def rg1_crop() -> Image:
    img = read_image(sample_path("RG1"))
    return img.with_pixels(np.ascontiguousarray(img.pixels[600:856, 700:1020]))


def _psnr(a: Image, b: Image) -> float:
    err = np.mean((a.pixels.astype(np.float64) - b.pixels.astype(np.float64)) ** 2)
    return 10 * np.log10(float(a.max_value) ** 2 / max(err, 1e-12))


def test_stream_names_its_model_and_any_codec_decodes_it(codec, rg1_crop):
    data = codec.compress(rg1_crop, quality=9)
    header, _ = bitstream.unpack(data)
    assert header.model_id == MODEL_ID
    out = Codec.pretrained("rsc2-cdf97-ctx").decompress(data)  # dispatch by the stream's model id
    assert out.shape == rg1_crop.shape and out.bits_stored == rg1_crop.bits_stored
    assert np.array_equal(out.pixels, codec.decompress(data).pixels)
    assert _psnr(rg1_crop, out) > 40


def test_old_models_stay_decodable(codec, rg1_crop):
    for mid in ("rsc2-cdf97-ctx",):
        data = Codec.pretrained(mid).compress(rg1_crop, quality=5)
        assert bitstream.unpack(data)[0].model_id == mid
        assert codec.decompress(data).metadata["codec"] == mid
    native = codec.compress(rg1_crop, max_error=0)
    assert np.array_equal(codec.decompress(native).pixels, rg1_crop.pixels)


def test_quality_ladder_is_monotone(codec, rg1_crop):
    streams = codec.compress_qualities(rg1_crop, [1, 5, 9, 13, 16])
    sizes = [len(streams[q]) for q in sorted(streams)]
    psnrs = [_psnr(rg1_crop, codec.decompress(streams[q])) for q in sorted(streams)]
    assert sizes == sorted(sizes) and psnrs == sorted(psnrs)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 4), (17, 33), (64, 65)])
def test_round_trip_any_size(codec, shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    px = (rng.integers(0, 4096, shape) // 3 + np.arange(shape[1]) * 7).astype(np.uint16)
    img = Image(pixels=px, bits_stored=12, photometric="MONOCHROME2", signed=False)
    data = codec.compress(img, quality=16)
    out = codec.decompress(data)
    assert out.shape == shape and out.pixels.dtype == np.uint16


def test_symbols_decode_exactly_and_rdo_only_moves_toward_zero(rg1_crop):
    from radseal.codec.api import normalized

    # the model's own steps (no band weights), so that its quantizer gives the symbols before RDO
    codec = SeqCodec(Codec.pretrained(MODEL_ID).model, band_weights=None)

    x = normalized(rg1_crop.pixels, int(rg1_crop.pixels.min()), int(rg1_crop.pixels.max()))
    coeffs = codec.model.analyse(x)
    h, w = rg1_crop.shape
    payload, final = codec.encode_symbols(coeffs, h, w, 6)
    sym, _ = codec.read_symbols(payload, h, w)
    assert np.array_equal(sym, final)
    plain = flatten(codec.model.quantize(coeffs, 6))
    changed = plain != final
    assert changed.any()  # the rate-distortion choice did something at this rate
    # each change lowers a magnitude by one (a 2 may go on to 0), never flips a sign
    p, f = plain[changed], final[changed]
    drop = np.abs(p) - np.abs(f)
    assert np.all((drop == 1) | ((np.abs(p) == 2) & (f == 0))) and np.all(f * p >= 0)
    assert (np.abs(p) >= 2).any() and (np.abs(p) == 1).any()  # both kinds of choice occur
    ones = SeqCodec(codec.model, rdo_levels=False, band_weights=None).encode_symbols(coeffs, h, w, 6)[1]
    c1 = plain != ones
    assert c1.any() and np.all(np.abs(plain[c1]) == 1) and np.all(ones[c1] == 0)
    off = SeqCodec(codec.model, rdo=False, band_weights=None).encode_symbols(coeffs, h, w, 6)
    assert np.array_equal(off[1], plain) and len(off[0]) > len(payload)


def test_compiled_context_rule_matches_the_reference():
    rng = np.random.default_rng(5)
    for h, w in [(9, 11), (16, 16), (5, 30)]:
        shapes = band_shapes(h * 8, w * 8)
        n = sum(a * b for a, b in shapes)
        # sparse, signed, with some large values: every context class and sign pattern occurs
        sym = (rng.integers(-3, 4, n) * (rng.random(n) < 0.4) * rng.choice([1, 1, 1, 9, 300], n)).astype(np.int32)
        shp = np.asarray(shapes, dtype=np.int32).ravel().tobytes()
        for fmt in (0, 1):  # format 1 adds the APM set (the sixth value)
            got = np.frombuffer(engine().seq_trace(sym.tobytes(), shp, fmt), dtype=np.int32).reshape(-1, 6)
            want = reference.contexts(sym, shapes, fmt)
            assert np.array_equal(got, want)
            assert (want[:, 5] != 0).any() == (fmt == 1)
            stream, final = engine().seq_encode(sym.tobytes(), shp, b"", b"", 0, fmt)
            assert np.array_equal(np.frombuffer(engine().seq_decode(stream, shp, fmt), dtype=np.int32), sym)


def test_deterministic_across_runs_and_threads(codec, rg1_crop):
    first = codec.compress(rg1_crop, quality=8)
    results: list[bytes] = [b""] * 4

    def work(i):
        results[i] = codec.compress(rg1_crop, quality=8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == first for r in results)
    a = codec.decompress(first).pixels
    decoded = [None] * 3

    def dec(i):
        decoded[i] = codec.decompress(first).pixels

    threads = [threading.Thread(target=dec, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, d) for d in decoded)


def test_damaged_payloads_fail_cleanly(codec, rg1_crop):
    data = codec.compress(rg1_crop, quality=8)
    header, payload = bitstream.unpack(data)
    h, w = header.height, header.width
    rng = np.random.default_rng(1)
    failures = 0
    cases = [payload[:-1], payload[: len(payload) // 2], payload + b"\0", payload[:10]]
    # an unknown format, and a format-1 payload read as format 0
    cases += [b"\x02" + payload[1:], b"\xff" + payload[1:], b"\x00" + payload[1:]]
    for _ in range(30):
        b = bytearray(payload)
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(b))
    for bad in cases:
        try:
            codec._decode(bad, h, w, header.quality)
        except BitstreamError:
            failures += 1
    # every damage is caught: the symbol CRC covers what the range decoder does not
    assert failures == len(cases)


def test_engine_refuses_bad_geometry():
    with pytest.raises(ValueError):
        engine().seq_decode(b"\0" * 8, np.asarray([4, 4, 2], dtype=np.int32).tobytes())
    with pytest.raises(ValueError):
        engine().seq_encode(np.zeros(3, np.int32).tobytes(), np.asarray([4, 4], dtype=np.int32).tobytes(), b"", b"", 0)


def test_registry_entry_takes_its_weights_from_rsc2(tmp_path, rg1_crop):
    import json
    import shutil

    from radseal.codec.errors import WeightsError
    from radseal.codec.weights import read_registry, weights_dir

    entry = read_registry()["models"][MODEL_ID]
    assert entry["weights_of"] == "rsc2-cdf97-ctx" and "sha256" not in entry  # one file, one hash to keep current
    folder = tmp_path / "w"
    shutil.copytree(weights_dir(), folder)
    reg = json.loads((folder / "registry.json").read_text())
    reg["models"][MODEL_ID]["weights_of"] = "nope"
    (folder / "registry.json").write_text(json.dumps(reg))
    with pytest.raises(WeightsError, match="takes its weights from 'nope'"):
        Codec.pretrained(MODEL_ID, weights_dir=folder)


def test_refitting_the_weights_keeps_a_default_that_codes_them(tmp_path):
    import json
    import shutil

    from radseal.codec.weights import load_npz, register_model, weights_dir

    folder = tmp_path / "w"
    shutil.copytree(weights_dir(), folder)
    reg = json.loads((folder / "registry.json").read_text())
    reg["default"] = MODEL_ID
    (folder / "registry.json").write_text(json.dumps(reg))
    base = "rsc2-cdf97-ctx"
    arrays = load_npz(folder / f"{base}.npz")
    register_model(folder, base, arrays, {}, {"family": "subband"}, make_default=True)
    assert json.loads((folder / "registry.json").read_text())["default"] == MODEL_ID
    assert Codec.pretrained(weights_dir=folder).model_id == MODEL_ID  # hash of the rewritten file followed
    register_model(folder, "other-model", arrays, {}, {"family": "subband"}, make_default=True)
    assert json.loads((folder / "registry.json").read_text())["default"] == "other-model"


def test_engine_survives_random_payloads():
    """Arbitrary bytes decode to some symbols or fail with ValueError, never crash or hang."""
    rng = np.random.default_rng(7)
    shp = np.asarray(band_shapes(40, 52), dtype=np.int32).ravel().tobytes()
    refused = 0
    for n in range(300):
        data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        try:
            out = engine().seq_decode(data, shp)
            assert len(out) == 4 * 40 * 52
        except ValueError:
            refused += 1
    assert refused > 250  # nearly every random payload ends early or leaves bytes over


FORMAT0 = Path(__file__).resolve().parent / "data" / "seq_format0"


@pytest.mark.parametrize("name", ["rg1_q3", "rg1_q9", "rg1_q15", "synthetic8_q6"])
def test_format0_fixtures_still_decode(codec, name):
    """Streams written by the first rsc3 (payload format 0) decode to the same symbols and pixels."""
    expected = json.loads((FORMAT0 / "expected.json").read_text())[name]
    data = (FORMAT0 / f"{name}.rsc").read_bytes()
    header, payload = bitstream.unpack(data)
    assert header.model_id == MODEL_ID and header.quality == expected["quality"] and payload[0] == 0
    sym, _ = codec.read_symbols(payload, header.height, header.width)
    assert hashlib.sha256(sym.astype("<i4").tobytes()).hexdigest() == expected["symbols_sha256"]
    want = np.load(FORMAT0 / f"{name}.npy")
    got = codec.decompress(data).pixels
    assert got.shape == want.shape and got.dtype == want.dtype
    # the inverse transform is float: allow one stored value of rounding, never more, rarely at all
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01
