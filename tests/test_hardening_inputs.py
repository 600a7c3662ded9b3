"""Inputs that used to pass the sender and fail the receiver, and outputs that used to replace files.

* no command writes over an existing file without --force, nor over an input ever;
* a DICOM without SOP Class / SOP Instance / Study / Series Instance UID encodes,
  decodes and is stored by the receiver as a valid derived object;
* truncated or damaged PNG, JPEG, TIFF and DICOM are refused, not zero-filled;
* signed pixels are never written to PNG;
* DICOM in JPEG Lossless, JPEG-LS, JPEG 2000, RLE and Deflated transfer syntaxes reads,
  pixel for pixel against an uncompressed reference or an independent decoder;
* pydicom's warnings and log records (which quote values) reach no output;
* help texts state the quality range, no "(default ...)" twice, paper has examples.
"""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from importlib import resources
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from PIL import ImageFile
from pydicom import uid
from pydicom.encaps import encapsulate, generate_frames

from radseal.cli import main
from radseal.errors import ImageReadError, ImageWriteError, OutputExistsError
from radseal.image import Image
from radseal.io import atomic_write, read_image, write_dicom, write_image, write_png
from radseal.io.samples import sample_path

DCIODVFY = shutil.which("dciodvfy")
DATA_STORE = Path(str(resources.files("data_store") / "data"))
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(autouse=True, scope="module")
def _codec_loaded_once():
    """Load the shipped codec weights once for the module instead of once per command."""
    import radseal.pipeline

    codec = radseal.pipeline.default_codec()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(radseal.pipeline, "default_codec", lambda: codec)
        yield


@pytest.fixture(scope="module")
def rg3():
    return read_image(sample_path("RG3"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    for role, name in (("receiver", "rx"), ("device", "dev")):
        assert main(["keygen", role, name, "--out", str(folder)]) == 0
    return folder


def crop_dicom(rg3, path: Path, size: int = 96, drop: tuple[str, ...] = (), signed: bool = False) -> Path:
    """A small real DICOM: a crop of RG3 with its header, optionally without some attributes."""
    crop = rg3.pixels[700 : 700 + size, 700 : 700 + size]
    write_dicom(Image(crop.copy(), rg3.bits_stored, rg3.photometric, signed=signed, source=rg3.source), path)
    if drop:
        ds = pydicom.dcmread(path)
        for keyword in drop:
            delattr(ds, keyword)
        ds.save_as(path, enforce_file_format=False)
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error_line(code, err: str, *needles: str) -> None:
    assert code not in (0, None), "the command succeeded"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("radseal: error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def encode_args(inp, out, keys: Path, *extra) -> list:
    return ["encode", inp, "--to", keys / "rx.pub", "--sign", keys / "dev.key", "-o", out, "--quality", "4", *extra]


def decode_args(inp, keys: Path, *extra) -> list:
    return ["decode", inp, "--key", keys / "rx.key", "--trust", keys / "dev.pub", *extra]


# =========================================================================== item 2: no overwrite


def test_decode_without_output_leaves_the_original_dicom_byte_identical(rg3, keys, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = crop_dicom(rg3, tmp_path / "chest.dcm")
    before = original.read_bytes()
    assert run_cli(encode_args("chest.dcm", "chest.rsl", keys), capsys)[0] == 0
    code, out, err = run_cli(decode_args("chest.rsl", keys), capsys)
    assert code == 0, err
    assert original.read_bytes() == before  # the lossy copy did not replace the original
    decoded = tmp_path / "chest-decoded.dcm"
    assert "chest-decoded.dcm" in out and pydicom.dcmread(decoded).LossyImageCompression == "01"

    # A second decode would replace the first one's output: refused, naming what to pass.
    first = decoded.read_bytes()
    code, _, err = run_cli(decode_args("chest.rsl", keys), capsys)
    assert_one_error_line(code, err, "chest-decoded.dcm", "already exists", "-o", "--force")
    assert decoded.read_bytes() == first and original.read_bytes() == before
    assert run_cli(decode_args("chest.rsl", keys, "--force"), capsys)[0] == 0
    assert original.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chest-decoded.dcm", "chest.dcm", "chest.rsl"]


def test_encode_and_decode_refuse_an_existing_output(rg3, keys, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crop_dicom(rg3, tmp_path / "a.dcm")
    (tmp_path / "taken.rsl").write_bytes(b"someone else's container")
    code, _, err = run_cli(encode_args("a.dcm", "taken.rsl", keys), capsys)
    assert_one_error_line(code, err, "taken.rsl", "already exists", "--force")
    assert (tmp_path / "taken.rsl").read_bytes() == b"someone else's container"

    assert run_cli(encode_args("a.dcm", "a.rsl", keys), capsys)[0] == 0
    (tmp_path / "taken.png").write_bytes(b"keep me")
    code, _, err = run_cli(decode_args("a.rsl", keys, "-o", "taken.png"), capsys)
    assert_one_error_line(code, err, "taken.png", "already exists")
    assert (tmp_path / "taken.png").read_bytes() == b"keep me"

    assert run_cli(encode_args("a.dcm", "taken.rsl", keys, "--force"), capsys)[0] == 0
    assert (tmp_path / "taken.rsl").read_bytes()[:4] != b"some"


def test_an_input_is_never_an_output_even_with_force(rg3, keys, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_png(Image(rg3.pixels[:64, :64] >> 2, 8), tmp_path / "scan.rsl")  # an image that happens to be named .rsl
    before = (tmp_path / "scan.rsl").read_bytes()
    code, _, err = run_cli(encode_args("scan.rsl", "scan.rsl", keys, "--force"), capsys)
    assert_one_error_line(code, err, "is also an input")
    os.link(tmp_path / "scan.rsl", tmp_path / "alias.rsl")  # the same file under another name
    code, _, err = run_cli(encode_args("scan.rsl", "alias.rsl", keys, "--force"), capsys)
    assert_one_error_line(code, err, "is also an input")
    assert (tmp_path / "scan.rsl").read_bytes() == before

    (tmp_path / "pr").mkdir()
    write_png(Image(rg3.pixels[:64, :64] >> 2, 8), tmp_path / "pr" / "original.png")
    before = (tmp_path / "pr" / "original.png").read_bytes()
    code, _, err = run_cli(["paper", "roundtrip", "pr/original.png", "--key-image", "scan.rsl",
                            "--insecure-paper-cipher", "--out", "pr", "--force"], capsys)
    assert_one_error_line(code, err, "is also an input")
    assert (tmp_path / "pr" / "original.png").read_bytes() == before


# Each command, with one of its outputs already present: refused before any work, file untouched.
EXISTING = {
    "demo": (["demo", "--out", "d"], "d/RG1.rsl"),
    "demo-key": (["demo", "--out", "d", "--sample", "RG3"], "d/keys/device.key"),
    "paper-roundtrip": (["paper", "roundtrip", "IMG", "--key-image", "IMG", "--insecure-paper-cipher", "--out", "pr"],
                        "pr/fig5.png"),
    "paper-sweep": (["paper", "sweep", "--data", "data", "--out", "ps", "--smoke", "--no-progress"], "ps/paper_sweep.md"),
    "train-codec": (["train-codec", "--synthetic", "--out", "run", "--steps", "1", "--no-progress"], "run/last.pt"),
    "fit-codec": (["fit-codec", "--out", "w", "--model-id", "m1", "--no-progress"], "w/m1.npz"),
    "export-codec": (["export-codec", "ckpt.pt", "--out", "w", "--model-id", "m1"], "w/m1.json"),
    "train-classifier": (["train-classifier", "--data", "data", "--out", "clf", "--quiet"], "clf/pneumonia_cnn.npz"),
    "evaluate": (["evaluate", "--data", "data", "--out", "ev", "--quiet", "--codecs", "jpeg2000"], "ev/notes.txt"),
}


@pytest.mark.parametrize("name", list(EXISTING))
def test_every_command_refuses_to_replace_an_existing_output(name, rg3, tmp_path, capsys, monkeypatch):
    argv, existing = EXISTING[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_png(Image(rg3.pixels[:64, :64] >> 2, 8), tmp_path / "img.png")
    (tmp_path / "ckpt.pt").write_bytes(b"not read: the output check comes first")
    target = tmp_path / existing
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"precious")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, _, err = run_cli([a.replace("IMG", "img.png") for a in argv], capsys)
    assert_one_error_line(code, err, "--force")
    assert target.read_bytes() == b"precious"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing else written either


@pytest.mark.parametrize("out", ["data", "data/test/NORMAL"])
def test_evaluate_never_writes_among_the_images_it_reads(out, tmp_path, capsys):
    (tmp_path / "data" / "test" / "NORMAL").mkdir(parents=True)
    code, _, err = run_cli(["evaluate", "--data", tmp_path / "data", "--out", tmp_path / out, "--quiet", "--force"],
                           capsys)
    assert_one_error_line(code, err, "is a folder of the images to evaluate")
    assert [p.name for p in (tmp_path / "data").rglob("*")] == ["test", "NORMAL"]


def test_atomic_write_without_replace_never_replaces(tmp_path):
    path = tmp_path / "out.dcm"
    path.write_bytes(b"first")
    with pytest.raises(OutputExistsError):
        atomic_write(path, b"second", replace=False)
    assert path.read_bytes() == b"first" and sorted(tmp_path.iterdir()) == [path]  # no temporary file left
    atomic_write(tmp_path / "new.dcm", b"data", replace=False)
    assert (tmp_path / "new.dcm").read_bytes() == b"data"


# =========================================================================== item 3: missing UIDs

MISSING = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


def _dciodvfy_errors(path: Path) -> set[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return {line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.parametrize("missing", MISSING)
def test_dicom_without_a_uid_encodes_decodes_and_is_valid(missing, rg3, keys, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crop_dicom(rg3, tmp_path / "full.dcm")
    source = crop_dicom(rg3, tmp_path / "src.dcm", drop=(missing,))
    assert missing not in pydicom.dcmread(source)
    code, _, err = run_cli(encode_args("src.dcm", "src.rsl", keys), capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("radseal: note: src.dcm: no ") and "UID" in notes[0], err
    code, _, err = run_cli(decode_args("src.rsl", keys, "-o", "out.dcm"), capsys)
    assert code == 0, err
    assert len(err.splitlines()) == 1 and err.startswith("radseal: note: no "), err
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    for keyword in MISSING:
        assert uid.UID(str(ds[keyword].value)).is_valid, keyword
    if missing == "SOPClassUID":
        assert ds.SOPClassUID == uid.SecondaryCaptureImageStorage and ds.ConversionType == "WSD"
    else:
        assert ds.SOPClassUID == rg3.source.SOPClassUID
    if missing in ("StudyInstanceUID", "SeriesInstanceUID"):
        assert ds[missing].value != rg3.source[missing].value
    assert ("SourceImageSequence" in ds) == (missing not in ("SOPClassUID", "SOPInstanceUID"))
    if DCIODVFY:
        assert run_cli(encode_args("full.dcm", "full.rsl", keys), capsys)[0] == 0
        assert run_cli(decode_args("full.rsl", keys, "-o", "full-out.dcm"), capsys)[0] == 0
        added = _dciodvfy_errors(tmp_path / "out.dcm") - _dciodvfy_errors(tmp_path / "full-out.dcm")
        assert not added, sorted(added)


@pytest.mark.parametrize("missing", MISSING)
def test_receiver_stores_a_dicom_without_a_uid(missing, rg3, tmp_path):
    from radseal.pipeline import seal_image
    from radseal.seal import DeviceKey, ReceiverKey
    from radseal.transport.drill import BitDropCodec
    from radseal.transport.index import ReceiptIndex
    from radseal.transport.receiver import Receiver
    from radseal.transport.stores import FolderStore

    img = read_image(crop_dicom(rg3, tmp_path / "src.dcm", drop=(missing,)))
    receiver_key, device_key = ReceiverKey.generate(), DeviceKey.generate()
    store = FolderStore(tmp_path / "store")
    receiver = Receiver([receiver_key], [device_key.public_key()], store, ReceiptIndex(tmp_path / "index.sqlite"),
                        tmp_path / "archive", codec=BitDropCodec())
    sealed = seal_image(img, receiver_key.public_key(), device_key, codec=BitDropCodec()).data
    receipt, duplicate = receiver.accept(sealed)
    assert not duplicate and store.count() == 1
    stored = pydicom.dcmread(store.files()[0])
    assert stored.SOPInstanceUID == receipt["sop_instance_uid"]
    for keyword in MISSING:
        assert uid.UID(str(stored[keyword].value)).is_valid, keyword
    assert receiver.accept(sealed) == (receipt, True)  # the generated UIDs follow the message id
    if DCIODVFY:
        assert not {e for e in _dciodvfy_errors(store.files()[0]) if "Missing attribute" in e or "UID" in e}


# =========================================================================== item 5: truncated images


def _png(width: int, height: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_png_whose_image_data_ends_early_is_refused(tmp_path):
    pixels = (np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    (tmp_path / "ok.png").write_bytes(_png(64, 64, rows))
    assert np.array_equal(read_image(tmp_path / "ok.png").pixels, pixels)  # the hand-made PNG is valid
    # A complete, well-formed zlib stream that holds only half the rows: Pillow zero-fills the rest.
    (tmp_path / "short.png").write_bytes(_png(64, 64, rows[: len(rows) // 2]))
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "short.png")


def _saved(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, kwargs", [("PNG", {}), ("JPEG", {"quality": 90}), ("TIFF", {}),
                                         ("TIFF", {"compression": "tiff_lzw"})], ids=["png", "jpeg", "tiff", "tiff-lzw"])
def test_cut_rasters_are_refused_even_where_pillow_is_told_to_allow_them(fmt, kwargs, tmp_path, monkeypatch):
    """Another library in the process may set ImageFile.LOAD_TRUNCATED_IMAGES; radseal still refuses."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    pixels = (np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)
    data = _saved(pixels, fmt, **kwargs)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ImageReadError):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def _cut_frame(source: Path, out: Path, fraction: float) -> Path:
    ds = pydicom.dcmread(source)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: int(len(frame) * fraction)]])
    ds.save_as(out)
    return out


@pytest.mark.parametrize("source", [
    DATA_STORE / "JPEG-LL.dcm",  # JPEG Lossless SV1, 16 bits
    DATA_STORE / "JPGLosslessP14SV1_1s_1f_8b.dcm",
    PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm",
    PYDICOM_FILES / "JPEGLSNearLossless_16.dcm",
    DATA_STORE / "RG3_J2KR.dcm",
    DATA_STORE / "RG3_J2KI.dcm",
    PYDICOM_FILES / "MR_small_RLE.dcm",
], ids=lambda p: p.stem)
@pytest.mark.parametrize("fraction", [0.5, 0.98])
def test_dicom_with_cut_compressed_pixel_data_is_refused(source, fraction, tmp_path):
    assert read_image(source).pixels.size  # the whole file reads
    with pytest.raises(ImageReadError, match="truncated|cannot decode"):
        read_image(_cut_frame(source, tmp_path / "cut.dcm", fraction))


def test_dicom_with_short_native_pixel_data_is_refused(rg3, tmp_path):
    ds = pydicom.dcmread(crop_dicom(rg3, tmp_path / "a.dcm"))
    ds.PixelData = ds.PixelData[:-64]
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(ImageReadError, match="less than expected"):
        read_image(tmp_path / "short.dcm")


# =========================================================================== item 6: signed pixels


def test_signed_pixels_are_never_written_to_png(rg3, keys, tmp_path, capsys, monkeypatch):
    img = read_image(crop_dicom(rg3, tmp_path / "signed.dcm", signed=True))
    assert img.signed
    with pytest.raises(ImageWriteError, match=r"-o NAME\.dcm"):
        write_image(img, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

    monkeypatch.chdir(tmp_path)
    assert run_cli(encode_args("signed.dcm", "signed.rsl", keys), capsys)[0] == 0
    code, _, err = run_cli(decode_args("signed.rsl", keys, "-o", "out.png"), capsys)
    assert_one_error_line(code, err, "signed", ".dcm")
    assert not (tmp_path / "out.png").exists()
    assert run_cli(decode_args("signed.rsl", keys, "-o", "out.dcm"), capsys)[0] == 0
    assert pydicom.dcmread(tmp_path / "out.dcm").PixelRepresentation == 1


def test_signed_image_without_dicom_decodes_to_dicom_by_default(keys, tmp_path, capsys, monkeypatch):
    from radseal.pipeline import seal_image
    from radseal.seal import load_device_key, load_receiver_public_key

    signed = Image(np.full((32, 32), 2048, np.uint16), bits_stored=12, signed=True)  # no DICOM header
    sealed = seal_image(signed, load_receiver_public_key(keys / "rx.pub"), load_device_key(keys / "dev.key"))
    (tmp_path / "s.rsl").write_bytes(sealed.data)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(decode_args("s.rsl", keys), capsys)
    assert code == 0, err
    assert (tmp_path / "s-decoded.dcm").exists() and not (tmp_path / "s-decoded.png").exists()


# =========================================================================== item 7: transfer syntaxes


def _signed_values(img: Image) -> np.ndarray:
    values = img.pixels.astype(np.int64)
    return values - (1 << (img.bits_stored - 1)) if img.signed else values


@pytest.mark.parametrize("compressed, reference", [
    (DATA_STORE / "RG3_J2KR.dcm", DATA_STORE / "RG3_UNCR.dcm"),  # JPEG 2000 lossless, a radiograph
    (DATA_STORE / "MR2_J2KR.dcm", DATA_STORE / "MR2_UNCR.dcm"),
    (PYDICOM_FILES / "MR_small_jp2klossless.dcm", PYDICOM_FILES / "MR_small.dcm"),
    (PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm", PYDICOM_FILES / "MR_small.dcm"),  # JPEG-LS lossless
    (PYDICOM_FILES / "MR_small_RLE.dcm", PYDICOM_FILES / "MR_small.dcm"),  # RLE
], ids=lambda p: p.stem)
def test_pydicom_data_compressed_files_equal_their_uncompressed_reference(compressed, reference):
    got, want = read_image(compressed), read_image(reference)
    assert got.shape == want.shape and got.bits_stored == want.bits_stored and got.signed == want.signed
    assert np.array_equal(got.pixels, want.pixels)


@pytest.mark.parametrize("path, independent", [
    (DATA_STORE / "JPEG-LL.dcm", "ljpeg_decode"),  # JPEG Lossless, Process 14 SV1, 16 bits signed
    (DATA_STORE / "JPGLosslessP14SV1_1s_1f_8b.dcm", "ljpeg_decode"),
    (DATA_STORE / "bad_sequence.dcm", "ljpeg_decode"),  # SV1, 12 bits
    (PYDICOM_FILES / "JPEGLSNearLossless_16.dcm", "jpegls_decode"),  # JPEG-LS near-lossless
    (PYDICOM_FILES / "JPEGLSNearLossless_08.dcm", "jpegls_decode"),
    (DATA_STORE / "RG3_J2KI.dcm", "jpeg2k_decode"),  # JPEG 2000 lossy, a radiograph
], ids=lambda p: getattr(p, "stem", p))
def test_pydicom_data_files_without_reference_agree_with_an_independent_decoder(path, independent):
    """No uncompressed twin ships for these: imagecodecs' decoders (lj92, CharLS, OpenJPEG) are the reference."""
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    want = getattr(imagecodecs, independent)(frame)
    if int(ds.PixelRepresentation) == 1 and want.dtype == np.uint16:
        want = want.view(np.int16)
    got = read_image(path)
    assert np.array_equal(_signed_values(got), want.astype(np.int64))


def _radiograph_in(ts: uid.UID, rg3, tmp_path: Path, encoded: bytes | None) -> tuple[Path, np.ndarray]:
    crop = rg3.pixels[600:856, 600:856].copy()
    ds = copy.deepcopy(rg3.source)
    ds.Rows, ds.Columns = crop.shape
    ds.PixelData = crop.tobytes()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    if ts == uid.RLELossless:
        ds.compress(uid.RLELossless, encoding_plugin="pydicom")
    elif encoded is not None:
        ds.PixelData = encapsulate([encoded])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
    else:
        ds.file_meta.TransferSyntaxUID = ts
    path = tmp_path / f"{ts.keyword or 'x'}.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ts
    return path, crop


RADIOGRAPH_SYNTAXES = {
    "jpeg-lossless-p14": (uid.JPEGLossless, lambda c: imagecodecs.jpeg8_encode(c, lossless=True, predictor=2, bitspersample=10), 0),
    "jpeg-lossless-sv1": (uid.JPEGLosslessSV1, lambda c: imagecodecs.jpeg8_encode(c, lossless=True, predictor=1, bitspersample=10), 0),
    "jpeg-ls-lossless": (uid.JPEGLSLossless, lambda c: imagecodecs.jpegls_encode(c, level=0), 0),
    "jpeg-ls-near-2": (uid.JPEGLSNearLossless, lambda c: imagecodecs.jpegls_encode(c, level=2), 2),
    "jpeg2000-lossless": (uid.JPEG2000Lossless, lambda c: imagecodecs.jpeg2k_encode(c, level=0, codecformat="J2K", reversible=True), 0),
    "rle": (uid.RLELossless, None, 0),
    "deflated": (uid.DeflatedExplicitVRLittleEndian, None, 0),
}


@pytest.mark.parametrize("name", list(RADIOGRAPH_SYNTAXES))
def test_a_radiograph_reads_in_every_transfer_syntax(name, rg3, tmp_path):
    """A 10-bit CR crop, encoded by encoders other than the decoders under test, reads back exactly
    (within the declared NEAR for near-lossless JPEG-LS)."""
    ts, encode, near = RADIOGRAPH_SYNTAXES[name]
    crop = rg3.pixels[600:856, 600:856].copy()
    path, crop = _radiograph_in(ts, rg3, tmp_path, encode(crop) if encode else None)
    got = read_image(path)
    assert got.shape == crop.shape and got.bits_stored == 10
    error = np.abs(got.pixels.astype(np.int64) - crop.astype(np.int64)).max()
    assert error <= near and (near == 0 or error > 0)


def test_deflated_pydicom_data_file_reads():
    img = read_image(PYDICOM_FILES / "image_dfl.dcm")
    assert img.shape == (512, 512) and img.bits_stored == 8 and img.pixels.std() > 10


# =========================================================================== item 10: pydicom quiet


SECRET = "SECRETPATIENTVALUE"


def _noisy_dicom(rg3, path: Path) -> Path:
    """Values that make pydicom warn and quote them: an age, a date, a UID."""
    crop = rg3.pixels[:64, :64].copy()
    write_dicom(Image(crop, rg3.bits_stored, rg3.photometric, source=rg3.source), path)
    with pydicom.config.disable_value_validation():
        raw = pydicom.dcmread(path)
        raw.add_new(0x00101010, "AS", SECRET[:4])  # Patient's Age: not nnnD/W/M/Y
        raw.add_new(0x00100030, "DA", SECRET[:8])  # Patient's Birth Date: not YYYYMMDD
        raw.add_new(0x00200052, "UI", SECRET)  # Frame of Reference UID: not a UID
        raw.save_as(path)
    return path


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_reading_dicom_and_its_carried_header_is_quiet(rg3, tmp_path):
    path = _noisy_dicom(rg3, tmp_path / "noisy.dcm")
    proc = _run_python(f"""
        import logging
        logging.basicConfig(level=logging.DEBUG)
        from radseal.io import read_image
        from radseal.pipeline import dicom_header_bytes, parse_dicom_header
        img = read_image({str(path)!r})
        ds = parse_dicom_header(dicom_header_bytes(img.source))
        print("ok", len(ds))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout
    assert SECRET[:4] not in proc.stderr + proc.stdout, proc.stderr


def test_receiver_log_carries_nothing_from_the_sealed_header(rg3, tmp_path):
    path = _noisy_dicom(rg3, tmp_path / "noisy.dcm")
    proc = _run_python(f"""
        import logging
        logging.basicConfig(level=logging.DEBUG)
        from pathlib import Path
        from radseal.io import read_image
        from radseal.pipeline import seal_image
        from radseal.seal import DeviceKey, ReceiverKey
        from radseal.transport.drill import BitDropCodec
        from radseal.transport.index import ReceiptIndex
        from radseal.transport.receiver import Receiver
        from radseal.transport.stores import FolderStore

        tmp = Path({str(tmp_path)!r})
        rx, dev = ReceiverKey.generate(), DeviceKey.generate()
        receiver = Receiver([rx], [dev.public_key()], FolderStore(tmp / "store"), ReceiptIndex(tmp / "index.sqlite"),
                            tmp / "archive", codec=BitDropCodec())
        sealed = seal_image(read_image({str(path)!r}), rx.public_key(), dev, codec=BitDropCodec()).data
        receipt, _ = receiver.accept(sealed)
        print("stored", receipt["sop_instance_uid"])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "stored" in proc.stdout
    assert SECRET[:4] not in proc.stderr + proc.stdout, proc.stderr


# =========================================================================== item 17: help and messages

SUBCOMMANDS = [["demo"], ["keygen"], ["encode"], ["decode"], ["inspect"], ["train-codec"], ["export-codec"],
               ["fit-codec"], ["serve"], ["send"], ["evaluate"], ["train-classifier"], ["paper"],
               ["paper", "roundtrip"], ["paper", "sweep"]]


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: "-".join(a))
def test_help_never_says_default_twice(argv, capsys):
    text = " ".join(_help(argv, capsys).split())
    assert not re.search(r"\(default[^)]*\) \(default", text), text
    assert "(default: None)" not in text


def test_help_states_the_quality_range_and_paper_has_examples(capsys):
    encode = " ".join(_help(["encode"], capsys).split())
    assert "from 1 (smallest file) to 46 (most detail)" in encode
    assert "examples:" in _help(["paper"], capsys)


@pytest.mark.parametrize("content", [b"just some notes\n" * 20, b"x" * 4, b"\x00" * 200],
                         ids=["text", "tiny", "zeros"])
def test_a_file_named_dcm_that_is_not_dicom_says_so(content, tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        read_image(path)


@pytest.mark.parametrize("mode", ["L", "I;16", "1", "RGB", "P"])
def test_complete_pngs_pass_the_completeness_check(mode, tmp_path):
    """The check that refuses cut PNGs accepts whole ones of every kind, including image data over 1 MiB."""
    from PIL import Image as PILImage

    from radseal.io.raster import _check_png_complete

    rng = np.random.default_rng(0)
    if mode == "I;16":
        pil = PILImage.fromarray(rng.integers(0, 65535, (700, 900)).astype(np.uint16))
    elif mode == "1":
        pil = PILImage.fromarray(rng.random((37, 53)) > 0.5)
    else:
        pil = PILImage.fromarray(rng.integers(0, 255, (700, 900, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    (tmp_path / "ok.png").write_bytes(buf.getvalue())
    _check_png_complete(tmp_path / "ok.png", buf.getvalue())  # raises ImageReadError if it finds rows missing
    if mode in ("L", "I;16"):
        assert np.array_equal(read_image(tmp_path / "ok.png").pixels, np.asarray(pil))
