"""Image in, sealed bytes out, and back: codec + sealed body + seal.

``seal_image`` compresses an :class:`~radseal.image.Image` with a codec, packs
the payload with the image's description (and the source DICOM header, patient
data included) into a sealed body, and seals it. ``open_image`` reverses it,
verifying before it decrypts and decrypting before it decodes.

Any object with ``compress(img, quality=..|bpp=..) -> bytes`` and
``decompress(bytes) -> Image`` serves as a codec; the default is the shipped
learned codec (``radseal.codec.Codec.pretrained()``).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from radseal.container import pack_body, unpack_body
from radseal.errors import RadsealError
from radseal.image import DEFAULT_MAX_PIXELS, PHOTOMETRICS, Image  # DEFAULT_MAX_PIXELS: re-exported
from radseal.io.dicom import quiet_pydicom
from radseal.seal import DeviceKey, DevicePublicKey, FormatError, Header, ReceiverKey, ReceiverPublicKey
from radseal.seal import open_sealed, seal

BODY_FORMAT = "radseal-image/1"
# Bulk pixel elements never travel in the DICOM header: the codec payload replaces them.
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class SealedImage:
    data: bytes
    payload_bytes: int
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OpenedImage:
    image: Image
    header: Header
    metadata: dict
    dicom_header: Dataset | None
    payload: bytes


class ImageTooLargeError(FormatError):
    """An authentic message whose image is larger than the reader agreed to decode."""


def check_image_size(body: Any, max_pixels: int) -> tuple[int, int]:
    """Refuse a body whose image is over ``max_pixels``, before anything is decoded.

    Both sizes a body declares are checked: the description in its metadata and,
    for the shipped codec's streams, the size in the stream's own header (which
    is what the decoder allocates for). Returns (width, height) from the metadata.
    Raises :class:`ImageTooLargeError`; a malformed body is left to the decoder.
    """
    desc = _image_description(body.metadata)
    sizes = [("its metadata", desc["columns"], desc["rows"])]
    payload = body.payload
    if payload[:4] == b"RSLC":
        from radseal.codec import BitstreamError, bitstream

        try:
            head = bitstream.peek_header(payload)
        except BitstreamError:
            head = None  # the decoder reports a damaged stream in its own words
        if head is not None:
            sizes.append(("its codec stream", head.width, head.height))
    for where, width, height in sizes:
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image of {width}x{height} (width x height, {width * height} pixels) declared by {where} "
                f"is over the limit of {max_pixels} pixels (--max-pixels)"
            )
    return desc["columns"], desc["rows"]
#: Image metadata key set on an opened image when its stream was lossless (0) or error-bounded (k).
CODEC_MAX_ERROR_KEY = "codec_max_error"


def default_codec():
    """The shipped learned codec (imported lazily: sealing does not need torch)."""
    try:
        from radseal.codec import Codec
    except ImportError as exc:
        raise RadsealError(f"the learned codec is not available in this installation ({exc})") from None
    return Codec.pretrained()


def _codec_name(codec: Any) -> str:
    """The codec's model id (the learned codec), else its name, else its class name."""
    for attr in ("model_id", "name"):
        value = getattr(codec, attr, None)
        if value:
            return str(value)
    return type(codec).__name__


def _json_safe(value: Any) -> Any:
    """Image metadata as plain JSON (odd values become strings, never a failure)."""
    if not value:
        return {}
    return json.loads(json.dumps(value, default=str))


def dicom_header_bytes(ds: Dataset) -> bytes:
    """The source dataset without pixel data, as a DICOM Part 10 file (explicit VR little endian)."""
    quiet_pydicom()
    header = Dataset()
    for elem in ds:
        if elem.tag not in _PIXEL_TAGS:
            header.add(elem)
    meta = FileMetaDataset()
    for elem in getattr(ds, "file_meta", []) or []:
        meta.add(elem)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SOPClassUID" in header:
        meta.MediaStorageSOPClassUID = header.SOPClassUID
    if "SOPInstanceUID" in header:
        meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    header.file_meta = meta
    header.preamble = b"\x00" * 128  # always a Part 10 file: the reader checks 'DICM'
    buf = io.BytesIO()
    try:
        header.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=False)
    except Exception as exc:  # pydicom raises many types for odd datasets
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FormatError(f"cannot encode the source DICOM header: {reason}") from None
    return buf.getvalue()


def parse_dicom_header(data: bytes) -> Dataset:
    """The DICOM header of a body: always a Part 10 file (preamble and 'DICM')."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise FormatError("sealed body: the DICOM header is not a DICOM Part 10 file")
    quiet_pydicom()  # pydicom's warnings quote values: patient data must not reach a log
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        if ds.file_meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
            raise FormatError("sealed body: the DICOM header is not Explicit VR Little Endian")
        ds.walk(lambda _ds, _elem: None)  # pydicom reads lazily: convert every element now
    except FormatError:
        raise
    except Exception as exc:  # authenticated bytes, but from a faulty sender
        # Only the exception's type: its text may quote a value from inside the sealed body,
        # and a receiver logs this message.
        raise FormatError(f"sealed body: the DICOM header does not parse ({type(exc).__name__})") from None
    return ds


def seal_image(
    img: Image,
    recipient: ReceiverPublicKey,
    signer: DeviceKey,
    *,
    codec: Any = None,
    quality: int | None = None,
    bpp: float | None = None,
    max_error: int | None = None,
    message_id: bytes | None = None,
    insecure_paper_cipher: bool = False,
) -> SealedImage:
    """Compress, pack and seal one image; ``stats`` holds sizes and step times.

    ``max_error=0`` seals the image losslessly, ``max_error=k`` with every pixel within k."""
    if sum(v is not None for v in (quality, bpp, max_error)) > 1:
        raise ValueError("give one of quality, bpp or max_error")
    codec = default_codec() if codec is None else codec
    target = ({"quality": quality} if quality is not None else {"bpp": bpp} if bpp is not None
              else {"max_error": max_error} if max_error is not None else {})
    t0 = time.perf_counter()
    payload = bytes(codec.compress(img, **target))
    t1 = time.perf_counter()
    metadata = {
        "format": BODY_FORMAT,
        "image": {
            "rows": img.height,
            "columns": img.width,
            "bits_stored": img.bits_stored,
            "photometric": img.photometric,
            "signed": bool(img.signed),
        },
        "source": _json_safe(img.metadata),
        "codec": {"name": _codec_name(codec), **target},
    }
    dicom = dicom_header_bytes(img.source) if isinstance(img.source, Dataset) else None
    body = pack_body(payload, metadata, dicom)
    t2 = time.perf_counter()
    data = seal(body, recipient, signer, message_id=message_id, insecure_paper_cipher=insecure_paper_cipher)
    t3 = time.perf_counter()
    stats = {
        "raw_bytes": img.raw_bytes,
        "payload_bytes": len(payload),
        "body_bytes": len(body),
        "dicom_header_bytes": len(dicom or b""),
        "sealed_bytes": len(data),
        "ratio": img.raw_bytes / len(data),
        "compress_s": t1 - t0,
        "pack_s": t2 - t1,
        "seal_s": t3 - t2,
        "stream": describe_payload(payload),
    }
    return SealedImage(data, len(payload), stats)


def _image_description(metadata: dict) -> dict:
    if metadata.get("format") != BODY_FORMAT:
        raise FormatError(f"sealed body: metadata format {metadata.get('format')!r} is not {BODY_FORMAT!r}")
    desc = metadata.get("image")
    ok = (
        isinstance(desc, dict)
        and all(isinstance(desc.get(k), int) and not isinstance(desc.get(k), bool) for k in ("rows", "columns", "bits_stored"))
        and desc.get("photometric") in PHOTOMETRICS
        and isinstance(desc.get("signed"), bool)
        and 1 <= desc["bits_stored"] <= 16
    )
    if not ok:
        raise FormatError("sealed body: metadata 'image' lacks rows, columns, bits_stored, photometric or signed")
    return desc


def open_image(
    data: bytes,
    keys: ReceiverKey | Iterable[ReceiverKey],
    trusted: DevicePublicKey | Iterable[DevicePublicKey],
    *,
    codec: Any = None,
    allow_insecure_paper_cipher: bool = False,
    max_pixels: int | None = None,
) -> OpenedImage:
    """Verify, decrypt, unpack and decode one container.

    ``max_pixels``: refuse (:class:`ImageTooLargeError`) an image larger than this
    before decoding it; None decodes whatever the codec accepts.
    """
    opened = open_sealed(data, keys, trusted, allow_insecure_paper_cipher=allow_insecure_paper_cipher)
    body = unpack_body(opened.body)
    desc = _image_description(body.metadata)
    if max_pixels is not None:
        check_image_size(body, max_pixels)
    dicom_header = parse_dicom_header(body.dicom) if body.dicom is not None else None
    codec = default_codec() if codec is None else codec
    decoded = codec.decompress(body.payload)
    pixels = np.asarray(decoded.pixels)
    if pixels.shape != (desc["rows"], desc["columns"]):
        raise FormatError(
            f"decoded image is {pixels.shape[1]}x{pixels.shape[0]} (width x height), "
            f"the metadata says {desc['columns']}x{desc['rows']}"
        )
    metadata = dict(body.metadata.get("source") or {})
    # What the decoder itself found (never what the sender wrote) says lossless or bounded error.
    metadata.pop(CODEC_MAX_ERROR_KEY, None)
    decoded_bound = (getattr(decoded, "metadata", None) or {}).get("max_error")
    if isinstance(decoded_bound, int) and not isinstance(decoded_bound, bool):
        metadata[CODEC_MAX_ERROR_KEY] = decoded_bound
    try:
        image = Image(
            pixels,
            bits_stored=desc["bits_stored"],
            photometric=desc["photometric"],
            signed=desc["signed"],
            source=dicom_header,
            metadata=metadata,
        )
    except ValueError as exc:
        raise FormatError(f"decoded image does not match its metadata: {exc}") from None
    return OpenedImage(image, opened.header, body.metadata, dicom_header, body.payload)


def describe_payload(payload: bytes) -> dict:
    """What a codec stream says of itself in its header: model, mode, size, bits stored, rate.

    Nothing is decoded. ``mode`` is ``lossless``, ``max_error`` (with ``max_error``: every pixel
    within that many stored values) or ``lossy`` (with ``quality``); a payload that is not a
    radseal codec stream gives ``mode`` ``unknown``. Raises the codec's ``BitstreamError`` for a
    damaged radseal stream header.
    """
    payload = bytes(payload)
    facts: dict = {"payload_bytes": len(payload)}
    if payload[:4] != b"RSLC":
        return {**facts, "mode": "unknown"}
    from radseal.codec import bitstream
    from radseal.codec.native import MODEL_ID as NATIVE_ID

    head = bitstream.peek_header(payload)
    facts.update(model=head.model_id, rows=head.height, columns=head.width, bits_stored=head.bits_stored,
                 photometric=head.photometric, signed=bool(head.signed),
                 bpp=8 * len(payload) / max(head.height * head.width, 1))
    if head.model_id == NATIVE_ID:
        facts.update(mode="lossless" if head.quality == 0 else "max_error", max_error=head.quality)
    else:
        facts.update(mode="lossy", quality=head.quality)
    return facts


def describe_sealed(
    data: bytes,
    keys: ReceiverKey | Iterable[ReceiverKey],
    trusted: DevicePublicKey | Iterable[DevicePublicKey],
    *,
    allow_insecure_paper_cipher: bool = False,
) -> dict:
    """Verify and decrypt a container and describe its image and codec stream, without decoding it.

    The signature is checked first (:func:`radseal.seal.open_sealed`); what is returned comes from
    the authenticated body: ``image`` (the metadata's description), ``codec`` (the sender's codec
    name), ``stream`` (:func:`describe_payload`) and ``dicom`` (whether a DICOM header travels).
    """
    opened = open_sealed(data, keys, trusted, allow_insecure_paper_cipher=allow_insecure_paper_cipher)
    body = unpack_body(opened.body)
    desc = _image_description(body.metadata)
    stream = describe_payload(body.payload)
    if "rows" in stream and (stream["rows"], stream["columns"]) != (desc["rows"], desc["columns"]):
        raise FormatError(
            f"the codec stream is {stream['columns']}x{stream['rows']} (width x height), "
            f"the metadata says {desc['columns']}x{desc['rows']}"
        )
    codec = body.metadata.get("codec")
    name = codec.get("name") if isinstance(codec, dict) else None
    return {
        "header": opened.header,
        "image": dict(desc),
        "codec": str(name) if isinstance(name, str) else "unknown",
        "stream": stream,
        "dicom": body.dicom is not None,
    }
