"""Derived DICOM: the attributes DICOM asks of a lossy reconstruction, checked by dciodvfy."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from radseal.image import Image
from radseal.io import read_image
from radseal.io.derived import LOSSY_METHOD, derived_dataset, derived_uid
from radseal.io.dicom import SECONDARY_CAPTURE_SOP_CLASS, encode_dicom

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools; scripts/install.sh installs it)"
)


def reconstruction(img: Image, drop: int = 2) -> Image:
    """A lossy stand-in reconstruction: low bits dropped, same shape and depth."""
    return img.with_pixels((img.pixels >> drop) << drop)


def dciodvfy_errors(path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def rg3():
    from radseal.io.samples import sample_path

    return read_image(sample_path("RG3"))


def test_derived_keeps_patient_study_series_and_marks_lossy(rg3):
    src = rg3.source
    before = src.SOPInstanceUID
    ds = derived_dataset(reconstruction(rg3), src, payload_bytes=40_000, model_id="codec-v7")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                    "AccessionNumber", "Modality", "SOPClassUID"):
        assert ds[keyword].value == src[keyword].value, keyword
    assert ds.SOPInstanceUID != before and src.SOPInstanceUID == before  # source untouched
    assert "LossyImageCompression" not in src
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.LossyImageCompression == "01"
    ratio = 1760 * 1760 * 2 / 40_000
    assert float(ds.LossyImageCompressionRatio) == pytest.approx(ratio, abs=0.01)
    assert ds.LossyImageCompressionMethod == LOSSY_METHOD
    assert "radseal" in ds.DerivationDescription and "codec-v7" in ds.DerivationDescription
    ref = ds.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == before and ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    assert ds.DerivationCodeSequence[0].CodeValue == "113040"
    back = pydicom.dcmread(io.BytesIO(encode_dicom(ds)))
    assert np.array_equal(back.pixel_array, reconstruction(rg3).pixels)


def test_earlier_lossy_steps_are_kept_in_order(rg3):
    src = pydicom.dcmread(io.BytesIO(encode_dicom(derived_dataset(rg3, rg3.source, payload_bytes=500_000, model_id="a"))))
    again = derived_dataset(reconstruction(rg3), src, payload_bytes=100_000, model_id="b")
    assert again.LossyImageCompression == "01"
    ratios = [float(v) for v in again.LossyImageCompressionRatio]
    assert ratios == pytest.approx([1760 * 1760 * 2 / 500_000, 1760 * 1760 * 2 / 100_000], abs=0.01)
    assert list(again.LossyImageCompressionMethod) == [LOSSY_METHOD, LOSSY_METHOD]


def test_uids_follow_the_seed():
    a, b = derived_uid("message-1", "instance"), derived_uid("message-1", "instance")
    assert a == b and a != derived_uid("message-2", "instance") and a != derived_uid("message-1", "study")
    assert re.fullmatch(r"2\.25\.\d+", a) and len(a) <= 64
    assert derived_uid(None, "instance") != derived_uid(None, "instance")


def test_image_without_dicom_becomes_secondary_capture():
    img = Image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096, bits_stored=12)
    ds = derived_dataset(img, None, payload_bytes=1000, model_id="m", uid_seed="x")
    assert ds.SOPClassUID == SECONDARY_CAPTURE_SOP_CLASS and ds.LossyImageCompression == "01"
    assert ds.StudyInstanceUID == derived_uid("x", "study")
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]


def test_bad_payload_size_is_refused(rg3):
    with pytest.raises(ValueError):
        derived_dataset(rg3, rg3.source, payload_bytes=0, model_id="m")


@needs_dciodvfy
@pytest.mark.parametrize("name", ["RG1", "RG3"])
def test_dciodvfy_derived_adds_no_errors_to_its_source(tmp_path, name):
    from radseal.io.samples import sample_path

    source_path = sample_path(name)
    img = read_image(source_path)
    derived = tmp_path / f"{name}_derived.dcm"
    derived.write_bytes(encode_dicom(derived_dataset(reconstruction(img), img.source, payload_bytes=50_000, model_id="m")))
    source_errors, derived_errors = dciodvfy_errors(source_path), dciodvfy_errors(derived)
    added = sorted(set(derived_errors) - set(source_errors))
    assert added == [], added
    assert len(derived_errors) <= len(source_errors)


@needs_dciodvfy
def test_dciodvfy_secondary_capture_has_no_errors(tmp_path):
    img = Image((np.arange(128 * 96) % 256).reshape(128, 96).astype(np.uint8), bits_stored=8)
    path = tmp_path / "sc.dcm"
    path.write_bytes(encode_dicom(derived_dataset(img, None, payload_bytes=900, model_id="m")))
    assert dciodvfy_errors(path) == []
