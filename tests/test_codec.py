"""Both codec families: round trips at native depth, deterministic decoding, bad input.

Tests that are about one family's internals use the ``hyperprior`` fixture
here, or live in ``test_codec_subband.py``.
"""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
import torch

from radseal.codec import BitstreamError, Codec, CodecError, UnknownModelError, WeightsError
from radseal.codec import bitstream
from radseal.codec.integer import ACT_BITS
from radseal.codec.weights import weights_dir
from radseal.evaluate.metrics import psnr
from radseal.image import Image
from radseal.io import read_image


FAMILIES = ["rsc2-cdf97-ctx", "rsc1-mshp-n128"]


@pytest.fixture(scope="module", params=FAMILIES)
def codec(request) -> Codec:
    return Codec.pretrained(request.param)


@pytest.fixture(scope="module")
def hyperprior() -> Codec:
    return Codec.pretrained("rsc1-mshp-n128")


def test_default_model_is_the_wavelet_codec():
    assert Codec.pretrained().model_id == "rsc3-cdf97-seq"


@pytest.fixture(scope="module")
def rg1_crop(rg1_path) -> Image:
    img = read_image(rg1_path)
    return img.with_pixels(img.pixels[600:856, 700:1020])  # 256 x 320, 15-bit


@pytest.fixture(scope="module")
def rg3_crop(rg3_path) -> Image:
    img = read_image(rg3_path)
    return img.with_pixels(img.pixels[700:900, 800:1000])  # 200 x 200, 10-bit


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rg1_crop", "rg3_crop"])
def test_round_trip_native_bit_depth(codec, name, request):
    img = request.getfixturevalue(name)
    data = codec.compress(img, quality=12)
    out = codec.decompress(data)
    assert out.shape == img.shape
    assert out.bits_stored == img.bits_stored
    assert out.photometric == img.photometric
    assert out.pixels.dtype == img.pixels.dtype
    assert out.pixels.min() >= img.pixels.min() and out.pixels.max() <= img.pixels.max()
    # Real compression: far below the raw size, and a recognisable image.
    assert len(data) < img.raw_bytes
    assert psnr(img.pixels, out.pixels, img.max_value) > 25


def test_higher_quality_costs_more_bytes_and_gives_less_error(codec, rg1_crop):
    low = codec.compress(rg1_crop, quality=codec.qualities[0])
    high = codec.compress(rg1_crop, quality=codec.qualities[-1])
    assert len(high) > len(low)
    err_low = np.abs(codec.decompress(low).pixels.astype(float) - rg1_crop.pixels).mean()
    err_high = np.abs(codec.decompress(high).pixels.astype(float) - rg1_crop.pixels).mean()
    assert err_high < err_low


def test_eight_bit_round_trip(codec, rg3_crop):
    px = (rg3_crop.pixels[:96, :130] >> 2).astype(np.uint8)
    img = Image(px, bits_stored=8)
    out = codec.decompress(codec.compress(img, quality=14))
    assert out.pixels.dtype == np.uint8 and out.shape == (96, 130)
    assert psnr(px, out.pixels, 255) > 25


@pytest.mark.parametrize("shape", [(1, 1), (1, 77), (77, 1), (65, 129), (3, 200)])
def test_any_size(codec, shape):
    rng = np.random.default_rng(1)
    img = Image(rng.integers(0, 1024, size=shape).astype(np.uint16), bits_stored=10, photometric="MONOCHROME1")
    out = codec.decompress(codec.compress(img, quality=5))
    assert out.shape == shape and out.bits_stored == 10 and out.photometric == "MONOCHROME1"


def test_constant_image(codec):
    img = Image(np.full((40, 50), 700, np.uint16), bits_stored=12)
    out = codec.decompress(codec.compress(img))
    assert np.array_equal(out.pixels, img.pixels)


def test_bpp_target_picks_the_highest_quality_that_fits(codec, rg3_crop):
    pixels = rg3_crop.pixels.size
    sizes = {q: len(codec.compress(rg3_crop, quality=q)) for q in codec.qualities}
    target = sizes[codec.qualities[len(codec.qualities) // 2]] * 8 / pixels * 1.01
    data = codec.compress(rg3_crop, bpp=target)
    assert len(data) * 8 / pixels <= target
    q = bitstream.peek_header(data).quality
    fits = [k for k, n in sizes.items() if n * 8 / pixels <= target]
    assert q == max(fits)


def test_bad_requests(codec, rg3_crop):
    with pytest.raises(CodecError):
        codec.compress(rg3_crop, quality=0)
    with pytest.raises(CodecError):
        codec.compress(rg3_crop, quality=3, bpp=0.5)
    with pytest.raises(CodecError):
        codec.compress(rg3_crop, bpp=-1)
    with pytest.raises(CodecError):
        codec.compress(np.zeros((8, 8), np.uint8))


def test_header_is_self_describing(codec, rg1_crop):
    data = codec.compress(rg1_crop, quality=7)
    h = bitstream.peek_header(data)
    assert (h.model_id, h.height, h.width, h.bits_stored, h.photometric, h.quality) == (
        codec.model_id,
        256,
        320,
        15,
        "MONOCHROME1",
        7,
    )
    assert h.signed is False


# -- deterministic decoding --------------------------------------------------------------------


def test_decoder_recovers_exactly_the_encoders_symbols(hyperprior, rg1_crop):
    codec = hyperprior
    z_enc, y_enc = codec.encoder_symbols(rg1_crop, 9)
    z_dec, y_dec = codec.decode_symbols(codec.compress(rg1_crop, quality=9))
    assert np.array_equal(z_enc, z_dec) and np.array_equal(y_enc, y_dec)


def test_integer_hyper_synthesis_is_exact(hyperprior):
    """The float64-carried integer path equals pure int64 arithmetic, bit for bit."""
    codec = hyperprior
    rng = np.random.default_rng(3)
    nz = codec._rt.tables.z_counts.shape[0]
    z = rng.integers(-6, 7, size=(nz, 9, 11))
    mean_a, scale_a = codec._rt.hs_int(z)
    mean_b, scale_b = codec._rt.hs_int.run_int64(z)
    assert np.array_equal(mean_a, mean_b) and np.array_equal(scale_a, scale_b)


def test_symbols_survive_perturbed_float_paths(hyperprior, rg1_crop):
    """Another machine: other thread count, float64 synthesis, noise in every float weight.

    The decoded symbols must not change; only the reconstructed pixels may move slightly.
    """
    codec = hyperprior
    data = codec.compress(rg1_crop, quality=10)
    z_ref, y_ref = codec.encoder_symbols(rg1_crop, 10)
    ref_pixels = codec.decompress(data).pixels.astype(np.int64)
    threads = torch.get_num_threads()
    perturbed = Codec.pretrained(codec.model_id)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            z, y = perturbed.decode_symbols(data)
            assert np.array_equal(z, z_ref) and np.array_equal(y, y_ref)
        net = perturbed._rt.net
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 1e-5 * (p.abs().mean() + 1e-8))
        z, y = perturbed.decode_symbols(data)
        assert np.array_equal(z, z_ref) and np.array_equal(y, y_ref)
        out = perturbed.decompress(data).pixels.astype(np.int64)
        assert np.abs(out - ref_pixels).max() <= max(2, rg1_crop.max_value // 1000)
        net.g_s.double()  # a decoder that synthesises in float64
        z, y = perturbed.decode_symbols(data)
        assert np.array_equal(z, z_ref) and np.array_equal(y, y_ref)
        out = perturbed.decompress(data).pixels.astype(np.int64)
        assert np.abs(out - ref_pixels).max() <= max(2, rg1_crop.max_value // 1000)
    finally:
        torch.set_num_threads(threads)


def test_float_hyper_synthesis_would_not_be_deterministic(hyperprior):
    """Why the integer path exists: the same network in float, nudged by rounding-sized noise,
    picks other tables for some latents, while the integer path has no float to nudge."""
    codec = hyperprior
    rt = codec._rt
    rng = np.random.default_rng(5)
    torch.manual_seed(5)  # the noise below must be the same on every run
    nz = rt.tables.z_counts.shape[0]
    z = rng.integers(-4, 5, size=(nz, 32, 32))
    _, idx_int = codec.hyper_synthesis(z)

    def float_indices(dtype, noise: float) -> np.ndarray:
        x = torch.from_numpy(z).to(dtype)[None]
        for i, (w, b) in enumerate(zip(rt.hs_int.weights, rt.hs_int.biases)):
            in_bits = 0 if i == 0 else ACT_BITS
            wf = torch.from_numpy(w / 2.0**12).to(dtype)
            bf = torch.from_numpy(b / 2.0 ** (12 + in_bits)).to(dtype)
            x = torch.nn.functional.conv2d(x, wf, bf, padding=1)
            x = x * (1 + noise * torch.randn_like(x))
            if rt.hs_int.shuffles[i]:
                x = torch.relu(torch.nn.functional.pixel_shuffle(x, 2))
        scale = x[0, x.shape[1] // 2 :].double().numpy()
        fixed = np.floor(scale * (1 << ACT_BITS)).astype(np.int64)
        return np.searchsorted(rt.thresholds, fixed, side="right")

    a = float_indices(torch.float32, 0.0)
    b = float_indices(torch.float64, 1e-6)
    assert (a != b).any(), "float paths agreed everywhere; the perturbation is too small to mean anything"
    # The integer path is a pure function of the integer symbols.
    assert np.array_equal(idx_int, codec.hyper_synthesis(z.copy())[1])


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream(codec, rg3_crop) -> bytes:
    return codec.compress(rg3_crop, quality=8)


@pytest.mark.parametrize("keep", [0, 3, 10, 30, -200, -5, -1])
def test_truncated_stream(codec, stream, keep):
    with pytest.raises(BitstreamError):
        codec.decompress(stream[:keep])


@pytest.mark.parametrize("where", [0, 4, 5, 8, 30, 45, 100, -3])
def test_flipped_byte(codec, stream, where):
    bad = bytearray(stream)
    bad[where] ^= 0x41
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(bad))


def test_corrupted_payload_with_valid_crc_is_refused(codec, stream):
    """A forged stream that passes the CRC still cannot decode silently into garbage."""
    body = bytearray(stream[:-4])
    refused = 0
    for where in (-9, -40, -400, len(body) // 2):
        forged = bytearray(body)
        forged[where] ^= 0x5A
        try:
            codec.decompress(_with_crc(bytes(forged)))
        except BitstreamError:
            refused += 1
    assert refused >= 3


def test_unknown_model_id(codec, stream):
    h, payload = bitstream.unpack(stream)
    other = bitstream.Header(**{**h.__dict__, "model_id": "no-such-model"})
    with pytest.raises(UnknownModelError):
        codec.decompress(bitstream.pack(other, payload))
    with pytest.raises(UnknownModelError):
        Codec.pretrained("no-such-model")


def test_declared_size_is_bounded(codec, stream):
    h, payload = bitstream.unpack(stream)
    huge = bitstream.Header(**{**h.__dict__, "height": 60000, "width": 60000})
    with pytest.raises(BitstreamError):
        codec.decompress(bitstream.pack(huge, payload))
    wrong = bitstream.Header(**{**h.__dict__, "height": h.height * 2})
    with pytest.raises(BitstreamError):  # more symbols than the payload holds
        codec.decompress(bitstream.pack(wrong, payload))


def test_not_bytes(codec):
    with pytest.raises(BitstreamError):
        codec.decompress("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("model_id", FAMILIES)
def test_damaged_weights_are_refused(tmp_path, model_id):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir(), folder)
    npz = folder / f"{model_id}.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.raises(WeightsError):
        Codec.pretrained(model_id, weights_dir=folder)


@pytest.mark.parametrize(("model_id", "prefix"), [("rsc1-mshp-n128", "float.g_s."), ("rsc2-cdf97-ctx", "ctx.weights")])
def test_mismatched_weights_are_refused(tmp_path, model_id, prefix):
    with np.load(weights_dir() / f"{model_id}.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    key = next(k for k in arrays if k.startswith(prefix))
    arrays[key] = arrays[key][..., :1]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(WeightsError):
        Codec.from_file(path)


def test_weights_of_unknown_family_are_refused(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, config=np.frombuffer(b'{"family": "jpeg9000"}', dtype=np.uint8))
    with pytest.raises(WeightsError, match="unknown family"):
        Codec.from_file(path)


def test_tiled_transforms_match_whole_image(hyperprior):
    """Bounded-memory tiling: same result as one pass, up to float rounding near tile borders."""
    codec = hyperprior
    from radseal.codec.runtime import _tiled

    net = codec._rt.net
    torch.manual_seed(0)
    y = torch.randn(1, net.config["m"], 12, 20)
    with torch.no_grad():
        whole = net.g_s(y)
        tiled = _tiled(net.g_s, y, tile=4, halo=4, up=True)
        x = torch.rand(1, 1, 192, 320)
        whole_a = net.g_a(x)
        tiled_a = _tiled(net.g_a, x, tile=64, halo=64, up=False)
    assert tiled.shape == whole.shape and tiled_a.shape == whole_a.shape
    assert torch.allclose(tiled, whole, atol=1e-3 * float(whole.abs().max()))
    assert torch.allclose(tiled_a, whole_a, atol=1e-3 * float(whole_a.abs().max()))
