"""The CLI: keygen, encode, decode, inspect (one-line errors, no partial files)."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

import radseal.pipeline
from radseal.cli import main
from radseal.image import Image
from radseal.io import read_image, write_image
from radseal.io.raster import encode_png


class PngCodec:
    name = "png-lossless-test"

    def compress(self, img, quality=None, bpp=None):
        return encode_png(img)

    def decompress(self, data):
        a = np.asarray(PILImage.open(io.BytesIO(data)))
        return Image(a.astype(np.uint16) if a.dtype != np.uint8 else a, 16 if a.dtype != np.uint8 else 8)


@pytest.fixture
def stand_in_codec(monkeypatch):
    monkeypatch.setattr(radseal.pipeline, "default_codec", PngCodec)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, rg3_path):
    """Keys of every kind and two small inputs: a DICOM crop of RG3 and an 8-bit PNG."""
    d = tmp_path_factory.mktemp("cli")
    (d / "pw").write_text("correct horse battery\n")
    keys = d / "keys"
    keys.mkdir()
    assert main(["keygen", "receiver", "hospital", "--out", str(keys)]) == 0
    assert main(["keygen", "receiver", "archive", "--kem", "mlkem768-x25519", "--out", str(keys),
                 "--passphrase-file", str(d / "pw")]) == 0
    assert main(["keygen", "device", "xray7", "--out", str(keys)]) == 0
    assert main(["keygen", "device", "stranger", "--out", str(d)]) == 0
    img = read_image(rg3_path)
    write_image(img.with_pixels(img.pixels[800:864, 700:780].copy()), d / "crop.dcm")
    write_image(Image((np.arange(50 * 40) % 251).astype(np.uint8).reshape(50, 40)), d / "plain.png")
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_files_and_modes(workdir):
    keys = workdir / "keys"
    for name in ("hospital", "archive", "xray7"):
        assert stat.S_IMODE(os.stat(keys / f"{name}.key").st_mode) == 0o600
        assert (keys / f"{name}.pub").read_text().count("-----BEGIN PUBLIC KEY-----") == (2 if name == "archive" else 1)
    assert "ENCRYPTED PRIVATE KEY" in (keys / "archive.key").read_text()


def test_keygen_refusals(workdir, capsys):
    keys = workdir / "keys"
    before = (keys / "xray7.key").read_bytes()
    code, _, err = run(capsys, "keygen", "device", "xray7", "--out", keys)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    assert (keys / "xray7.key").read_bytes() == before
    assert run(capsys, "keygen", "device", "x", "--kem", "x25519", "--out", keys)[0] == 2
    assert run(capsys, "keygen", "device", "../evil", "--out", keys)[0] == 2
    assert run(capsys, "keygen", "device", "x", "--out", workdir / "missing")[0] == 2


@pytest.mark.parametrize("receiver,extra", [("hospital", []), ("archive", ["--passphrase-file", "pw"])])
def test_dicom_round_trip(workdir, capsys, stand_in_codec, receiver, extra):
    d = workdir
    out = d / f"{receiver}.rsl"
    code, text, _ = run(capsys, "encode", d / "crop.dcm", "--to", d / "keys" / f"{receiver}.pub",
                        "--sign", d / "keys" / "xray7.key", "-o", out)
    assert code == 0 and "sealed" in text
    extra = [d / e if e == "pw" else e for e in extra]
    code, text, _ = run(capsys, "decode", out, "--key", d / "keys" / f"{receiver}.key", *extra,
                        "--trust", d / "keys")
    assert code == 0 and "authentic" in text
    decoded = out.with_name(f"{receiver}-decoded.dcm")  # DICOM in, DICOM out by default, never IN.dcm
    ds = pydicom.dcmread(decoded)
    src = pydicom.dcmread(d / "crop.dcm")
    assert np.array_equal(ds.pixel_array, src.pixel_array)
    assert ds.PatientID == src.PatientID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.ImageType[0] == "DERIVED"


def test_png_round_trip_and_inspect(workdir, capsys, stand_in_codec):
    d = workdir
    assert run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "hospital.pub", "--sign",
               d / "keys" / "xray7.key", "-o", d / "plain.rsl")[0] == 0
    code, text, _ = run(capsys, "decode", d / "plain.rsl", "--key", d / "keys" / "hospital.key",
                        "--trust", d / "keys" / "xray7.pub", "-o", d / "back.png")
    assert code == 0
    assert np.array_equal(read_image(d / "back.png").pixels, read_image(d / "plain.png").pixels)
    code, text, _ = run(capsys, "inspect", d / "plain.rsl")
    assert code == 0 and "hpke-x25519" in text and "xray7" not in text
    code, text, _ = run(capsys, "inspect", d / "plain.rsl", "--json")
    facts = json.loads(text)
    assert facts["version"] == 1 and facts["suite_id"] == 1 and len(facts["message_id"]) == 32


def test_inspect_never_shows_patient_data(workdir, capsys, stand_in_codec):
    d = workdir
    run(capsys, "encode", d / "crop.dcm", "--to", d / "keys" / "hospital.pub", "--sign", d / "keys" / "xray7.key",
        "-o", d / "p.rsl")
    patient = str(pydicom.dcmread(d / "crop.dcm").PatientName)
    code, text, _ = run(capsys, "inspect", d / "p.rsl", "--json")
    assert code == 0 and patient not in text
    assert patient.encode() not in (d / "p.rsl").read_bytes()


def _sealed(workdir, capsys, name="e.rsl"):
    d = workdir
    run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "hospital.pub", "--sign", d / "keys" / "xray7.key",
        "-o", d / name)
    return d / name


@pytest.mark.parametrize(
    "case,message",
    [
        ("wrong key", "sealed for receiver key"),
        ("untrusted", "not among the 1 trusted"),
        ("tampered", "not authentic"),
        ("truncated", "truncated container"),
        ("no passphrase", "passphrase-protected"),
        ("not a container", "bad magic"),
    ],
)
def test_decode_errors_are_one_line_and_leave_no_file(workdir, capsys, stand_in_codec, case, message):
    d = workdir
    sealed = _sealed(workdir, capsys)
    key, trust, source = d / "keys" / "hospital.key", d / "keys" / "xray7.pub", sealed
    extra = []
    data = sealed.read_bytes()
    if case == "wrong key":
        key, extra = d / "keys" / "archive.key", ["--passphrase-file", d / "pw"]
    elif case == "untrusted":
        trust = d / "stranger.pub"
    elif case == "tampered":
        source = d / "bad.rsl"
        source.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    elif case == "truncated":
        source = d / "bad.rsl"
        source.write_bytes(data[:-10])
    elif case == "no passphrase":
        key = d / "keys" / "archive.key"
    elif case == "not a container":
        source = d / "plain.png"
    out = d / "never.png"
    code, text, err = run(capsys, "decode", source, "--key", key, *extra, "--trust", trust, "-o", out)
    assert code == 2 and text == ""
    assert err.startswith("radseal: error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and not list(d.glob(".never.png.*"))


def test_encode_errors(workdir, capsys, stand_in_codec):
    d = workdir
    code, _, err = run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "xray7.pub", "--sign",
                       d / "keys" / "xray7.key", "-o", d / "x.rsl")
    assert code == 2 and "not a receiver public key" in err and not (d / "x.rsl").exists()
    code, _, err = run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "hospital.pub", "--sign",
                       d / "keys" / "hospital.key", "-o", d / "x.rsl")
    assert code == 2 and "not a device" in err
    code, _, err = run(capsys, "encode", d / "missing.png", "--to", d / "keys" / "hospital.pub", "--sign",
                       d / "keys" / "xray7.key", "-o", d / "x.rsl")
    assert code == 2 and "no such image file" in err and not (d / "x.rsl").exists()
    assert run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "hospital.pub", "--sign",
               d / "keys" / "xray7.key", "-o", d / "x.png")[0] == 2


def test_insecure_paper_suite_needs_the_flag(workdir, capsys, stand_in_codec):
    d = workdir
    code, _, err = run(capsys, "encode", d / "plain.png", "--to", d / "keys" / "hospital.pub", "--sign",
                       d / "keys" / "xray7.key", "-o", d / "weak.rsl", "--insecure-paper-cipher")
    assert code == 0 and "WARNING" in err
    code, text, _ = run(capsys, "inspect", d / "weak.rsl")
    assert "INSECURE" in text
    args = ["decode", d / "weak.rsl", "--key", d / "keys" / "hospital.key", "--trust", d / "keys", "-o", d / "weak.png"]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--insecure-paper-cipher" in err and not (d / "weak.png").exists()
    assert run(capsys, *args, "--insecure-paper-cipher")[0] == 0 and (d / "weak.png").exists()


@pytest.fixture(scope="module")
def real_codec():
    """The shipped learned codec, or a skip where this checkout has no codec or weights yet."""
    try:
        from radseal.codec import Codec

        return Codec.pretrained()
    except Exception as exc:  # ImportError, or the codec's WeightsError
        pytest.skip(f"learned codec not available: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("receiver,extra", [("hospital", []), ("archive", ["--passphrase-file", "pw"])])
def test_round_trip_with_the_learned_codec(workdir, capsys, real_codec, receiver, extra):
    """The CLI path with the real codec (both KEMs): lossy, so shape, depth and a sane PSNR are checked."""
    from radseal.evaluate.metrics import psnr

    d = workdir
    out = d / f"real-{receiver}.rsl"
    code, text, err = run(capsys, "encode", d / "crop.dcm", "--to", d / "keys" / f"{receiver}.pub",
                          "--sign", d / "keys" / "xray7.key", "-o", out)
    assert code == 0, err
    extra = [d / e if e == "pw" else e for e in extra]
    code, text, err = run(capsys, "decode", out, "--key", d / "keys" / f"{receiver}.key", *extra,
                          "--trust", d / "keys", "-o", d / f"real-{receiver}.dcm")
    assert code == 0, err
    src, back = read_image(d / "crop.dcm"), read_image(d / f"real-{receiver}.dcm")
    assert back.shape == src.shape and back.bits_stored == src.bits_stored == 10
    assert back.photometric == src.photometric
    assert psnr(src.pixels, back.pixels, src.max_value) > 20  # lossy, but an image, not noise
    ds = pydicom.dcmread(d / f"real-{receiver}.dcm")
    assert ds.LossyImageCompression == "01" and real_codec.model_id in ds.DerivationDescription
