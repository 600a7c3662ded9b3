"""DICOM in and out through pydicom."""

from __future__ import annotations

import copy
import io
import logging
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radseal.errors import ImageReadError, ImageWriteError
from radseal.image import Image

SECONDARY_CAPTURE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
# Root for UIDs radseal makes (pydicom's generate_uid with a prefix would
# need a registered root; without one it uses the UUID-derived 2.25 arc).


# pydicom and its decoder plugins report odd values as warnings and log records that quote the
# values: patient names, ids, dates. radseal reads untrusted files and sealed bodies whose contents
# must not reach a terminal or a receiver's log, so these are silenced process-wide (a filter by
# module, which unlike warnings.catch_warnings is safe with the receiver's threads); a value radseal
# needs and cannot use becomes an ImageReadError instead. pydicom.config.debug() still works.
_QUIET_MODULES = r"(pydicom|pylibjpeg|openjpeg|libjpeg|rle)(\.|$)"
_QUIET_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle")


def quiet_pydicom() -> None:
    """Keep pydicom's (and its plugins') warnings and log records off every output; idempotent."""
    if not any(f[0] == "ignore" and getattr(f[2], "pattern", None) == _QUIET_MODULES for f in warnings.filters):
        warnings.filterwarnings("ignore", module=_QUIET_MODULES)
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.propagate:
            logger.addHandler(logging.NullHandler())
            logger.propagate = False


quiet_pydicom()

# Transfer syntaxes whose frames are JPEG-family codestreams: each must end with the EOI (JPEG,
# JPEG-LS) or EOC (JPEG 2000) marker, both FF D9. Decoders fill a stream that stops early with
# zeros or grey instead of failing, so a missing end marker is how a cut-off frame is told.
_JPEG_FAMILY = {
    uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
    uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K,
}


def looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM data set without the Part 10 preamble (older files) starts with a group 0002 or 0008 tag."""
    if len(data) < 8:
        return False
    little, big = int.from_bytes(data[0:2], "little"), int.from_bytes(data[0:2], "big")
    return little in (0x0002, 0x0008) or big == 0x0008


def read_dicom(path: Path, data: bytes) -> Image:
    """Parse DICOM bytes into an Image; any damage becomes an :class:`ImageReadError`.

    pydicom parses elements lazily and reports damaged ones with many
    exception types (struct.error, NotImplementedError for an unknown VR,
    BytesLengthException, ...); each is turned into one error naming the file.
    Its warnings are silenced (see :func:`quiet_pydicom`).
    """
    quiet_pydicom()
    try:
        return _read_dicom(path, data)
    except ImageReadError:
        raise
    except (MemoryError, RecursionError):
        raise ImageReadError(f"{path}: not a readable DICOM file (damaged element lengths)") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise ImageReadError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _check_frame_complete(path: Path, ds: Dataset) -> None:
    """Refuse an encapsulated JPEG-family frame that stops before its end marker."""
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts not in _JPEG_FAMILY:
        return
    frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    # Fragments are padded to an even length, with 00 or FF (a fill byte JPEG allows).
    if not frame.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
        raise ImageReadError(f"{path}: DICOM pixel data is truncated ({ts.name} stream has no end marker)")


def _read_dicom(path: Path, data: bytes) -> Image:
    part10 = looks_like_dicom(data)
    if not part10 and not looks_like_bare_dicom(data):
        raise ImageReadError(f"{path}: not a DICOM file (no DICOM preamble, and it does not start with a DICOM element)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not part10)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no Pixel Data")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(f"{path}: unsupported Photometric Interpretation {photometric!r} (grayscale only)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ImageReadError(f"{path}: only single-sample (grayscale) DICOM images are supported")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ImageReadError(f"{path}: multi-frame DICOM images are not supported")
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if not 1 <= bits_stored <= 16:
        raise ImageReadError(f"{path}: Bits Stored {bits_stored} is outside 1..16")
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    _check_frame_complete(path, ds)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or compressed data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" (transfer syntax {ts.name})" if ts is not None else ""
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data{what}: {exc}") from None
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D image, got pixel array of shape {arr.shape}")
    values = arr.astype(np.int64)
    if signed:
        values = values + (1 << (bits_stored - 1))
    # Out-of-range samples exist in the wild (stray overlay bits); keep the
    # image readable and inside its declared depth.
    values = np.clip(values, 0, (1 << bits_stored) - 1)
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    meta = {
        "source_format": "DICOM",
        "source_name": Path(path).name,
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "modality": str(ds.get("Modality", "")),
    }
    return Image(values.astype(dtype), bits_stored, photometric, signed, source=ds, metadata=meta)


def _stored_values(img: Image) -> tuple[np.ndarray, int]:
    """Pixel values as DICOM stores them, with the Bits Allocated to use."""
    bits_allocated = 8 if img.bits_stored <= 8 else 16
    if img.signed:
        values = img.pixels.astype(np.int32) - (1 << (img.bits_stored - 1))
        return values.astype(np.int8 if bits_allocated == 8 else np.int16), bits_allocated
    return img.pixels, bits_allocated


def set_pixels(ds: Dataset, img: Image) -> None:
    """Put ``img`` into ``ds`` as uncompressed Pixel Data with matching module attributes."""
    values, bits_allocated = _stored_values(img)
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = img.photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = img.bits_stored
    ds.HighBit = img.bits_stored - 1
    ds.PixelRepresentation = 1 if img.signed else 0
    for tag in ("NumberOfFrames", "PlanarConfiguration"):
        if tag in ds:
            delattr(ds, tag)
    ds.PixelData = values.astype(values.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"


def secondary_capture(img: Image) -> Dataset:
    """A minimal Secondary Capture object for an image that came without DICOM."""
    now = datetime.now(timezone.utc)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPClassUID = SECONDARY_CAPTURE_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "OT"
    ds.Laterality = ""  # General Series, Type 2C: validators expect it present
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.Manufacturer = "radseal"
    set_pixels(ds, img)
    return ds


def to_dataset(img: Image) -> Dataset:
    """The image as a DICOM dataset: its source with new pixels, or a Secondary Capture."""
    if isinstance(img.source, Dataset):
        ds = copy.deepcopy(img.source)  # a shallow copy would write through to the source
        set_pixels(ds, img)
        return ds
    return secondary_capture(img)


def encode_dicom(ds: Dataset) -> bytes:
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise ImageWriteError(f"cannot write a DICOM object without {keyword} (radseal.io.derived fills it in)")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buf.getvalue()


def write_dicom(img_or_ds: Image | Dataset, path: str | Path, *, replace: bool = True) -> Path:
    """Write DICOM through a temporary file; ``replace=False`` never replaces an existing file."""
    from radseal.io.files import atomic_write

    ds = to_dataset(img_or_ds) if isinstance(img_or_ds, Image) else img_or_ds
    data = encode_dicom(ds)
    try:
        return atomic_write(path, data, replace=replace)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write DICOM ({exc.strerror or exc})") from None
