"""Derived DICOM: what a receiver stores after a lossy round trip.

A reconstruction is not the image the modality acquired, and DICOM says so
in a fixed set of attributes (PS3.3 C.7.6.1.1.5 "Lossy Image Compression",
C.7.6.1 General Image module):

* a new SOP Instance UID, Image Type value 1 ``DERIVED``;
* Lossy Image Compression (0028,2110) = ``01`` (never reset once set), with
  Lossy Image Compression Ratio (0028,2112) and Method (0028,2114) holding one
  value per lossy step, oldest first: ours is appended to any earlier ones;
* Derivation Description naming the codec and its model version, Derivation
  Code Sequence (DCM 113040 "Lossy Compression") and a Source Image Sequence
  pointing at the original (purpose DCM 121320 "Uncompressed predecessor").

A lossless stream (``max_error=0``) gives Lossy Image Compression ``00`` (or
keeps an earlier ``01``) with no new ratio or method; a stream with a
guaranteed maximum error gives ``01``, method ``RADSEAL_MAXERROR`` and the
bound in the Derivation Description. Which one applies comes from the
decoder (image metadata ``codec_max_error``), never from what a sender wrote.

Patient, study and series attributes are kept, so the object files next to
its source in a PACS. An image that came without DICOM becomes a Secondary
Capture object carrying the same lossy-compression attributes.

UIDs can be derived from a seed (the message id on a receiver) so that
processing the same message twice yields the same object, which is what
makes storing idempotent.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from radseal.image import Image
from radseal.io.dicom import SECONDARY_CAPTURE_SOP_CLASS, secondary_capture, set_pixels

# No defined term exists for a learned codec (PS3.3 C.7.6.1.1.5.1 lists JPEG,
# JPEG-LS, JPEG 2000, ...); this one is ours and the Derivation Description
# says what it means.
LOSSY_METHOD = "RADSEAL_LEARNED"
# The native-depth coder with a guaranteed maximum error (near-lossless); the bound is in
# the Derivation Description.
NEAR_LOSSLESS_METHOD = "RADSEAL_MAXERROR"
#: Set on an opened image by the pipeline when the decoder found a lossless (0) or
#: error-bounded (k) stream; see radseal.pipeline.CODEC_MAX_ERROR_KEY.
MAX_ERROR_KEY = "codec_max_error"
_UID_NAMESPACE = uuid.UUID("6f1d3c1e-5a0b-4c7e-9a57-72616473656c")  # fixed, radseal's own

_PIXEL_DATA_TAG = 0x7FE00010

# Attributes whose values described the source pixels and are wrong for new ones.
_STALE_PIXEL_ATTRIBUTES = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingRangeLimit",
    "NumberOfFrames",
    "PlanarConfiguration",
)


def derived_uid(seed: str | None, role: str) -> UID:
    """A UID under the UUID arc 2.25: random without a seed, fixed for a given (seed, role)."""
    if seed is None:
        return UID(f"2.25.{uuid.uuid4().int}")
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{role}:{seed}').int}")


def uncompressed_bytes(img: Image) -> int:
    """Size of the pixels as DICOM stores them uncompressed (whole bytes per sample)."""
    return img.height * img.width * (1 if img.bits_stored <= 8 else 2)


def format_ratio(ratio: float) -> str:
    """A Decimal String (at most 16 characters) for a compression ratio."""
    text = f"{ratio:.2f}" if ratio < 1e9 else f"{ratio:.6e}"
    return text[:16]


def _values(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return []
    value = ds[keyword].value
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def _copy_header(source: Dataset) -> Dataset:
    """A deep copy of ``source`` without its Pixel Data (Dataset.copy() is shallow and shares elements)."""
    ds = Dataset()
    for elem in source:
        if elem.tag != _PIXEL_DATA_TAG:
            ds.add(copy.deepcopy(elem))
    if hasattr(source, "file_meta"):
        ds.file_meta = copy.deepcopy(source.file_meta)
    ds.preamble = getattr(source, "preamble", None)
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _uid_value(ds: Dataset, keyword: str) -> str:
    """The UID's text, or "" when the element is absent, empty or unreadable."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a damaged element counts as missing
        return ""
    return str(value).strip() if value is not None else ""


#: What a derived object does when its source lacks an identifying UID (PS3.3 C.12.1, C.7.2.1,
#: C.7.3.1, C.7.6.1): every one of these has an answer, so none makes ``encode`` refuse.
MISSING_UID_DECISIONS = {
    "SOPInstanceUID": "no SOP Instance UID: the derived object gets its own as always, "
                      "but cannot reference its source (Source Image Sequence left out)",
    "SOPClassUID": "no SOP Class UID: the derived object is stored as Secondary Capture Image Storage, "
                   "the class DICOM has for images whose acquisition is not described",
    "StudyInstanceUID": "no Study Instance UID: the derived object gets a new one (derived from the message id), "
                        "so it does not join the source's study",
    "SeriesInstanceUID": "no Series Instance UID: the derived object gets a new one (derived from the message id)",
}


def identifier_notes(source: Dataset | None) -> list[str]:
    """One line per identifying UID the source lacks, saying what the derived object does instead."""
    if not isinstance(source, Dataset):
        return []
    return [text for keyword, text in MISSING_UID_DECISIONS.items() if not _uid_value(source, keyword)]


def _fill_missing_uids(ds: Dataset, missing: list[str], uid_seed: str | None) -> None:
    if "SOPClassUID" in missing:
        ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
        # SC Equipment module (PS3.3 C.8.6.1): Conversion Type is Type 1; WSD: made on a workstation.
        if not str(ds.get("ConversionType", "") or "").strip():
            ds.ConversionType = "WSD"
        if not str(ds.get("Modality", "") or "").strip():
            ds.Modality = "OT"
    if "StudyInstanceUID" in missing:
        ds.StudyInstanceUID = derived_uid(uid_seed, "study")
    if "SeriesInstanceUID" in missing:
        ds.SeriesInstanceUID = derived_uid(uid_seed, "series")
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


def message_uid_seed(sender_key_id: str, message_id: str) -> str:
    """The seed of a derived object's UIDs: the message's identity, (sender key id, message id).

    The receiver and a local ``radseal decode`` use the same seed, so both give
    one message the same UIDs, and no device can aim at another device's object.
    """
    return f"{sender_key_id}/{message_id}"


def derived_dataset(
    img: Image,
    source: Dataset | None,
    *,
    payload_bytes: int,
    model_id: str,
    uid_seed: str | None = None,
    software_version: str | None = None,
    notes: list[str] | None = None,
) -> Dataset:
    """The DICOM object for a reconstruction ``img`` of ``source``.

    ``source`` is the original header (pixel data not needed) or None for an
    image that came without DICOM (a Secondary Capture results).
    ``payload_bytes`` is the size of the compressed codec payload, from which
    the ratio is computed; ``model_id`` names the codec and its weights.
    A source without SOP Class, SOP Instance, Study or Series Instance UID
    still gives a valid object (see :data:`MISSING_UID_DECISIONS`); one line
    per such decision is appended to ``notes`` when a list is given.
    """
    if payload_bytes <= 0:
        raise ValueError(f"payload_bytes must be positive, got {payload_bytes}")
    if software_version is None:
        from radseal import __version__ as software_version
    now = datetime.now(timezone.utc)
    ratio = uncompressed_bytes(img) / payload_bytes

    if source is None:
        ds = secondary_capture(img)
        ds.StudyInstanceUID = derived_uid(uid_seed, "study")
        ds.SeriesInstanceUID = derived_uid(uid_seed, "series")
        ds.Laterality = ""  # General Series, Type 2C: dciodvfy wants it present
        earlier_ratios: list[str] = []
        earlier_methods: list[str] = []
        extra_image_type: list[str] = []
    else:
        ds = _copy_header(source)
        for keyword in _STALE_PIXEL_ATTRIBUTES:
            if keyword in ds:
                delattr(ds, keyword)
        set_pixels(ds, img)
        already_lossy = str(ds.get("LossyImageCompression", "")).strip() == "01"
        earlier_ratios = _values(ds, "LossyImageCompressionRatio") if already_lossy else []
        earlier_methods = _values(ds, "LossyImageCompressionMethod") if already_lossy else []
        extra_image_type = _values(ds, "ImageType")[2:]

        missing = [k for k in MISSING_UID_DECISIONS if not _uid_value(ds, k)]
        if notes is not None:
            notes.extend(MISSING_UID_DECISIONS[k] for k in missing)
        if "SOPClassUID" in missing or "SOPInstanceUID" in missing:
            # Both are Type 1 in a reference (PS3.3 C.10.6.1.1): no reference rather than a broken one.
            if "SourceImageSequence" in ds:
                del ds.SourceImageSequence
        else:
            reference = Dataset()
            reference.ReferencedSOPClassUID = ds.SOPClassUID
            reference.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            reference.PurposeOfReferenceCodeSequence = [_code("121320", "Uncompressed predecessor")]
            ds.SourceImageSequence = [reference]
        _fill_missing_uids(ds, missing, uid_seed)

    ds.SOPInstanceUID = derived_uid(uid_seed, "instance")
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["DERIVED", "SECONDARY", *extra_image_type]
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime

    bound = img.metadata.get(MAX_ERROR_KEY) if isinstance(img.metadata, dict) else None
    if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
        bound = None
    size_text = f"ratio {format_ratio(ratio)}:1 ({payload_bytes} bytes for {uncompressed_bytes(img)})"
    if bound == 0:
        # Lossless: "00" unless an earlier step was lossy ("01" is never reset; its values stay).
        if source is not None and str(source.get("LossyImageCompression", "")).strip() == "01":
            ds.LossyImageCompression = "01"  # the copied header keeps the earlier ratios and methods
        else:
            ds.LossyImageCompression = "00"
            for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
                if keyword in ds:
                    delattr(ds, keyword)
        ds.DerivationDescription = (
            f"Lossless compression by radseal {software_version}, native-depth coder {model_id}, {size_text}"
        )[:1024]
        if "DerivationCodeSequence" in ds:
            del ds.DerivationCodeSequence
        return ds
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*earlier_ratios, format_ratio(ratio)]
    if bound is not None:
        ds.LossyImageCompressionMethod = [*earlier_methods, NEAR_LOSSLESS_METHOD]
        ds.DerivationDescription = (
            f"Near-lossless compression by radseal {software_version}, native-depth coder {model_id}, "
            f"maximum absolute error {bound} (stored pixel values), {size_text}"
        )[:1024]
    else:
        ds.LossyImageCompressionMethod = [*earlier_methods, LOSSY_METHOD]
        ds.DerivationDescription = (
            f"Lossy compression by radseal {software_version}, learned codec {model_id}, {size_text}"
        )[:1024]
    ds.DerivationCodeSequence = [_code("113040", "Lossy Compression")]
    return ds
