"""Image I/O on real radiographs (pydicom-data) and generated files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from radseal.cli import main
from radseal.errors import ImageReadError, ImageWriteError
from radseal.image import Image
from radseal.io import read_image, write_image
from radseal.io.dataset import fixed_size, list_samples


def test_rg1_is_read_at_native_depth(rg1_path):
    img = read_image(rg1_path)
    assert img.shape == (1955, 1841)
    assert img.bits_stored == 15
    assert img.photometric == "MONOCHROME1"
    assert img.pixels.dtype == np.uint16
    assert img.pixels.max() <= 2**15 - 1
    assert isinstance(img.source, pydicom.Dataset)


def test_rg3_is_ten_bit(rg3_path):
    img = read_image(rg3_path)
    assert img.bits_stored == 10
    assert img.pixels.max() <= 1023


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_png_round_trip_keeps_values(tmp_path, bits):
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits <= 8 else np.uint16
    px = rng.integers(0, 2**bits, size=(37, 53)).astype(dtype)
    path = write_image(Image(px, bits_stored=bits), tmp_path / "x.png")
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, px)
    assert back.pixels.dtype == dtype


@pytest.mark.parametrize("signed", [False, True])
def test_dicom_round_trip_keeps_values_and_sign(tmp_path, signed):
    rng = np.random.default_rng(1)
    px = rng.integers(0, 2**12, size=(40, 30)).astype(np.uint16)
    img = Image(px, bits_stored=12, photometric="MONOCHROME1", signed=signed)
    path = write_image(img, tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == 12 and ds.PixelRepresentation == int(signed)
    if signed:
        np.testing.assert_array_equal(ds.pixel_array.astype(int), px.astype(int) - 2048)
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, px)
    assert back.photometric == "MONOCHROME1" and back.signed == signed


def test_dicom_rewrite_keeps_source_attributes(tmp_path, rg3_path):
    img = read_image(rg3_path)
    out = write_image(img.with_pixels(img.pixels[:64, :80]), tmp_path / "crop.dcm")
    ds = pydicom.dcmread(out)
    assert ds.PatientID == img.source.PatientID
    assert (ds.Rows, ds.Columns) == (64, 80)


def test_jpeg_and_tiff_are_read(tmp_path):
    from PIL import Image as PILImage

    px = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    PILImage.fromarray(px).save(tmp_path / "a.jpg", quality=95)
    PILImage.fromarray(px).save(tmp_path / "a.tif")
    assert read_image(tmp_path / "a.jpg").shape == (48, 64)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").pixels, px)


def test_colour_picture_becomes_gray(tmp_path):
    from PIL import Image as PILImage

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    assert img.pixels.ndim == 2 and img.bits_stored == 8


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello world, not an image", "unrecognised"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "cannot decode"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_image(p)


def test_truncated_dicom_is_a_clear_error(tmp_path, rg3_path):
    p = tmp_path / "cut.dcm"
    p.write_bytes(rg3_path.read_bytes()[:5000])
    with pytest.raises(ImageReadError):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such image file"):
        read_image(tmp_path / "nope.dcm")


def test_unknown_output_extension(tmp_path):
    with pytest.raises(ImageWriteError, match="use .png or .dcm"):
        write_image(Image(np.zeros((4, 4), np.uint8)), tmp_path / "x.bmp")
    assert list(tmp_path.iterdir()) == []


def test_image_rejects_values_beyond_bits():
    with pytest.raises(ValueError, match="do not fit"):
        Image(np.array([[0, 4096]], dtype=np.int32), bits_stored=12)


def test_fixed_size_pads_and_keeps_aspect():
    img = Image(np.full((50, 100), 255, np.uint8))
    view = fixed_size(img, 40)
    assert view.shape == (40, 40)
    # a 2:1 image fills 20 of 40 rows; the rest is black padding
    assert np.isclose(view[20, 20], 1.0) and np.count_nonzero(view[:, 20] > 0.5) == 20


def test_fixed_size_shows_monochrome1_bright_as_dense():
    img = Image(np.zeros((8, 8), np.uint16), bits_stored=12, photometric="MONOCHROME1")
    assert np.allclose(fixed_size(img, 8), 1.0)


def test_kermany_layout(tmp_path):
    from PIL import Image as PILImage

    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.jpeg")
    train = list_samples(tmp_path, "train")
    assert [s.label for s in train] == [0, 1]
    assert len(list_samples(tmp_path)) == 4


def test_shared_data_set_is_found(cxr_dir):
    assert len(list_samples(cxr_dir, "train")) == 260
    assert len(list_samples(cxr_dir, "test")) == 126


def test_cli_without_command_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "radseal: error:" in capsys.readouterr().err


def test_atomic_write_leaves_no_partial_file_and_honours_modes(tmp_path, monkeypatch):
    import os

    from radseal.io.files import atomic_write

    target = tmp_path / "out.bin"
    atomic_write(target, b"old")
    assert (os.stat(target).st_mode & 0o777) == (0o666 & ~_umask())
    atomic_write(tmp_path / "secret.key", b"k", mode=0o600)
    assert (os.stat(tmp_path / "secret.key").st_mode & 0o777) == 0o600

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "secret.key"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rewriting_pixels_leaves_the_source_dataset_alone(rg3_path):
    from radseal.io import to_dataset

    img = read_image(rg3_path)
    rows_before = img.source.Rows
    ds = to_dataset(img.with_pixels(img.pixels[:10, :10]))
    assert ds.Rows == 10 and img.source.Rows == rows_before
