"""``radseal inspect`` shows the codec mode with the receiver key; the derived DICOM states it."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from radseal.cli import main
from radseal.codec.native import MODEL_ID as NATIVE_ID
from radseal.io import read_image, write_image
from radseal.io.derived import LOSSY_METHOD, NEAR_LOSSLESS_METHOD
from radseal.io.samples import sample_path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Keys, a 10-bit DICOM crop, and one container per mode."""
    tmp = tmp_path_factory.mktemp("inspect")
    keys = tmp / "keys"
    keys.mkdir()
    for role, name in (("receiver", "hospital"), ("device", "unit"), ("receiver", "other"), ("device", "stranger")):
        assert main(["keygen", role, name, "--out", str(keys)]) == 0
    img = read_image(sample_path("RG3"))
    crop = np.ascontiguousarray(img.pixels[800:928, 700:860])
    write_image(img.with_pixels(crop), tmp / "crop.dcm")
    base = ["encode", str(tmp / "crop.dcm"), "--to", str(keys / "hospital.pub"), "--sign", str(keys / "unit.key")]
    modes = {"lossless": ["--lossless"], "max2": ["--max-error", "2"], "q5": ["--quality", "5"]}
    for name, extra in modes.items():
        assert main(base + extra + ["-o", str(tmp / f"{name}.rsl")]) == 0
    return tmp, keys, crop


def _inspect(capsys, tmp, keys, name, *extra):
    capsys.readouterr()
    rc = main(["inspect", str(tmp / f"{name}.rsl"), "--key", str(keys / "hospital.key"),
               "--trust", str(keys / "unit.pub"), *extra])
    return rc, capsys.readouterr()


def test_without_a_key_the_mode_is_sealed(made, capsys):
    tmp, _, _ = made
    capsys.readouterr()
    assert main(["inspect", str(tmp / "lossless.rsl")]) == 0
    out = capsys.readouterr().out
    assert "not verified" in out and "codec mode:     sealed" in out
    assert "mode:           " not in out
    assert main(["inspect", str(tmp / "q5.rsl"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["stream"] == "sealed" and facts["verified"] is False


@pytest.mark.parametrize("name, mode_text, model", [
    ("lossless", "mode:           lossless", NATIVE_ID),
    ("max2", "mode:           near-lossless, every pixel within 2 stored values", NATIVE_ID),
    ("q5", "mode:           lossy, quality 5", None),
])
def test_with_the_key_inspect_shows_model_mode_size_and_bits(made, capsys, name, mode_text, model):
    tmp, keys, crop = made
    rc, cap = _inspect(capsys, tmp, keys, name)
    assert rc == 0, cap.err
    out = cap.out
    assert "verified: signed by a trusted device" in out
    assert mode_text in out
    assert f"image:          {crop.shape[1]}x{crop.shape[0]} (width x height), 10 bits stored" in out
    from radseal.pipeline import default_codec

    assert f"codec model:    {model or default_codec().model_id}" in out
    assert "bpp" in out and ":1 of the stored size" in out
    rc, cap = _inspect(capsys, tmp, keys, name, "--json")
    facts = json.loads(cap.out)
    assert facts["verified"] is True and facts["image"]["bits_stored"] == 10
    stream = facts["stream"]
    assert stream["mode"] == {"lossless": "lossless", "max2": "max_error", "q5": "lossy"}[name]
    assert stream.get("max_error", stream.get("quality")) == {"lossless": 0, "max2": 2, "q5": 5}[name]
    assert (stream["rows"], stream["columns"]) == crop.shape


@pytest.mark.parametrize("args, words", [
    (["--key", "keys/hospital.key"], "needs --trust"),
    (["--trust", "keys/unit.pub"], "go with --key"),
    (["--key", "keys/other.key", "--trust", "keys/unit.pub"], ""),
    (["--key", "keys/hospital.key", "--trust", "keys/stranger.pub"], ""),
    (["--key", "keys/missing.key", "--trust", "keys/unit.pub"], ""),
])
def test_bad_keys_give_one_line(made, capsys, args, words):
    tmp, _, _ = made
    args = [str(tmp / a) if a.startswith("keys/") else a for a in args]
    capsys.readouterr()
    assert main(["inspect", str(tmp / "q5.rsl"), *args]) != 0
    err = capsys.readouterr().err
    assert err.startswith("radseal: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert words in err


def test_tampered_container_is_refused(made, capsys):
    tmp, keys, _ = made
    data = bytearray((tmp / "q5.rsl").read_bytes())
    data[-5] ^= 1
    (tmp / "bad.rsl").write_bytes(bytes(data))
    rc, cap = _inspect(capsys, tmp, keys, "bad")
    assert rc != 0 and cap.err.startswith("radseal: error:") and cap.err.count("\n") == 1
    assert "mode:" not in cap.out


def _decoded_dicom(made, name):
    tmp, keys, _ = made
    out = tmp / f"{name}.dcm"
    assert main(["decode", str(tmp / f"{name}.rsl"), "--key", str(keys / "hospital.key"), "--trust",
                 str(keys / "unit.pub"), "-o", str(out), "--force"]) == 0
    return pydicom.dcmread(out)


def _last(v):
    from pydicom.multival import MultiValue

    return list(v)[-1] if isinstance(v, MultiValue) else v


def test_derived_dicom_lossless_says_00_and_names_the_native_coder(made):
    ds = _decoded_dicom(made, "lossless")
    assert ds.LossyImageCompression == "00"
    assert "LossyImageCompressionRatio" not in ds and "LossyImageCompressionMethod" not in ds
    assert ds.DerivationDescription.startswith("Lossless compression") and NATIVE_ID in ds.DerivationDescription
    assert np.array_equal(ds.pixel_array.astype(np.uint16), made[2])


def test_derived_dicom_near_lossless_says_01_with_method_and_bound(made):
    ds = _decoded_dicom(made, "max2")
    assert ds.LossyImageCompression == "01"
    assert _last(ds.LossyImageCompressionMethod) == NEAR_LOSSLESS_METHOD
    assert float(_last(ds.LossyImageCompressionRatio)) > 1
    assert "maximum absolute error 2 (stored pixel values)" in ds.DerivationDescription
    assert NATIVE_ID in ds.DerivationDescription
    assert np.abs(ds.pixel_array.astype(int) - made[2].astype(int)).max() <= 2


def test_derived_dicom_lossy_says_01_with_ratio_and_method(made):
    from radseal.pipeline import default_codec

    ds = _decoded_dicom(made, "q5")
    assert ds.LossyImageCompression == "01"
    assert _last(ds.LossyImageCompressionMethod) == LOSSY_METHOD
    assert float(_last(ds.LossyImageCompressionRatio)) > 1
    assert ds.DerivationDescription.startswith("Lossy compression") and default_codec().model_id in ds.DerivationDescription
    assert ds.DerivationCodeSequence[0].CodeValue == "113040"


def test_decode_prints_the_streams_mode(made, capsys):
    tmp, keys, _ = made
    for name, text in (("q5", "mode: lossy, quality 5"), ("lossless", "mode: lossless"), ("max2", "within 2")):
        capsys.readouterr()
        assert main(["decode", str(tmp / f"{name}.rsl"), "--key", str(keys / "hospital.key"), "--trust",
                     str(keys / "unit.pub"), "-o", str(tmp / f"{name}-m.png")]) == 0
        assert text in capsys.readouterr().out


def test_receiver_names_the_streams_model_and_mode_in_the_stored_dicom(tmp_path):
    """A lossless message from a device running the default codec: the stored DICOM says 00 and names
    the native-depth coder that made the stream (not the receiver's default codec)."""
    import io

    from fastapi.testclient import TestClient

    from radseal.pipeline import default_codec, seal_image
    from radseal.seal import DeviceKey, ReceiverKey
    from radseal.transport.receiver import create_app
    from radseal.transport.stores import FolderStore

    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    img = read_image(sample_path("RG3"))
    crop = img.with_pixels(np.ascontiguousarray(img.pixels[800:864, 700:764]))
    store = FolderStore(tmp_path / "store")
    client = TestClient(create_app(receiver, [device.public_key()], store, tmp_path / "index.sqlite", codec=default_codec()))
    for max_error, flag in ((0, "00"), (2, "01")):
        data = seal_image(crop, receiver.public_key(), device, max_error=max_error).data
        answer = client.post("/v1/messages", content=data)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_id"] == NATIVE_ID
        ds = pydicom.dcmread(io.BytesIO(store.get(answer.json()["sop_instance_uid"])))
        assert ds.LossyImageCompression == flag and NATIVE_ID in ds.DerivationDescription
