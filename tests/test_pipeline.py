"""seal_image / open_image with a small lossless stand-in codec (any object with compress/decompress)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from radseal.container import pack_body
from radseal.image import Image
from radseal.io import read_image
from radseal.io.raster import encode_png
from radseal.pipeline import BODY_FORMAT, open_image, seal_image
from radseal.seal import DeviceKey, FormatError, ReceiverKey, seal


class PngCodec:
    """Lossless stand-in: PNG at 8 or 16 bits; records the settings it was asked for."""

    name = "png-lossless-test"

    def __init__(self):
        self.calls = []

    def compress(self, img, quality=None, bpp=None):
        self.calls.append({"quality": quality, "bpp": bpp})
        return encode_png(img)

    def decompress(self, data):
        a = np.asarray(PILImage.open(io.BytesIO(data)))
        return Image(a.astype(np.uint16) if a.dtype != np.uint8 else a, 16 if a.dtype != np.uint8 else 8)


RECEIVER = ReceiverKey.generate()
DEVICE = DeviceKey.generate()


@pytest.fixture(scope="module")
def small_dicom_image(rg3_path):
    img = read_image(rg3_path)
    return img.with_pixels(img.pixels[800:848, 700:764].copy())  # 48 x 64, 10 bits, source kept


def test_dicom_round_trip_keeps_header_inside_the_seal(small_dicom_image):
    img = small_dicom_image
    sealed = seal_image(img, RECEIVER.public_key(), DEVICE, codec=PngCodec())
    assert sealed.stats["sealed_bytes"] == len(sealed.data) and sealed.payload_bytes > 0
    assert b"CompressedSamples" not in sealed.data  # patient name never in clear
    opened = open_image(sealed.data, RECEIVER, [DEVICE.public_key()], codec=PngCodec())
    assert np.array_equal(opened.image.pixels, img.pixels)
    assert (opened.image.bits_stored, opened.image.photometric) == (10, img.photometric)
    assert str(opened.dicom_header.PatientName) == str(img.source.PatientName)
    assert opened.dicom_header.StudyInstanceUID == img.source.StudyInstanceUID
    assert "PixelData" not in opened.dicom_header
    assert opened.image.source is opened.dicom_header
    assert opened.metadata["format"] == BODY_FORMAT and opened.metadata["source"]["source_format"] == "DICOM"
    assert opened.header.sender_key_id == DEVICE.key_id


def test_png_image_has_no_dicom_header():
    img = Image(np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) % 4096, bits_stored=12)
    codec = PngCodec()
    sealed = seal_image(img, RECEIVER.public_key(), DEVICE, codec=codec, bpp=0.5)
    assert codec.calls == [{"quality": None, "bpp": 0.5}]
    opened = open_image(sealed.data, [RECEIVER], DEVICE.public_key(), codec=codec)
    assert opened.dicom_header is None and np.array_equal(opened.image.pixels, img.pixels)
    assert opened.metadata["codec"] == {"name": "png-lossless-test", "bpp": 0.5}


def test_quality_and_bpp_are_exclusive():
    img = Image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        seal_image(img, RECEIVER.public_key(), DEVICE, codec=PngCodec(), quality=3, bpp=0.1)


def test_decoded_shape_must_match_metadata():
    class Liar(PngCodec):
        def decompress(self, data):
            return Image(np.zeros((3, 3), np.uint8))

    sealed = seal_image(Image(np.zeros((4, 5), np.uint8)), RECEIVER.public_key(), DEVICE, codec=PngCodec())
    with pytest.raises(FormatError, match=r"\(width x height\), the metadata says 5x4"):
        open_image(sealed.data, RECEIVER, [DEVICE.public_key()], codec=Liar())


@pytest.mark.parametrize(
    "metadata,message",
    [
        ({}, "metadata format"),
        ({"format": BODY_FORMAT}, "lacks rows"),
        ({"format": BODY_FORMAT, "image": {"rows": 1, "columns": 1, "bits_stored": 99,
                                             "photometric": "MONOCHROME2", "signed": False}}, "lacks rows"),
    ],
)
def test_authentic_but_malformed_bodies_are_format_errors(metadata, message):
    data = seal(pack_body(b"x", metadata), RECEIVER.public_key(), DEVICE)
    with pytest.raises(FormatError, match=message):
        open_image(data, RECEIVER, [DEVICE.public_key()], codec=PngCodec())


def test_broken_dicom_header_is_a_format_error():
    meta = {"format": BODY_FORMAT, "image": {"rows": 1, "columns": 1, "bits_stored": 8,
                                              "photometric": "MONOCHROME2", "signed": False}}
    for dicom in (b"\x08\x00\x10\x00\xff\xff", bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff"):
        data = seal(pack_body(b"x", meta, dicom), RECEIVER.public_key(), DEVICE)
        with pytest.raises(FormatError, match="DICOM header"):
            open_image(data, RECEIVER, [DEVICE.public_key()], codec=PngCodec())
