"""The sealed body: codec payload, image metadata and the source DICOM header.

This is the plaintext that :func:`radseal.seal.seal` encrypts; patient data
lives only here, never in the clear header. Layout (big-endian; normative
text in docs/format.md)::

    offset size  field
         0    4  magic            "RSLB"
         4    1  version          1
         5    1  flags            bit 0: a DICOM header is present; others 0
         6    2  reserved         0
         8    4  metadata length  m   (<= 1 MiB)
        12    4  payload length   p   (<= 256 MiB)
        16    4  DICOM length     d   (<= 16 MiB; 0 exactly when flag bit 0 is clear)
        20    m  metadata         UTF-8 JSON object
      20+m    p  payload          codec bitstream, opaque here
    20+m+p    d  DICOM            Part 10 file without Pixel Data

Nothing may follow the last section.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from radseal.seal.errors import FormatError

MAGIC = b"RSLB"
VERSION = 1
FLAG_DICOM = 0x01
_PREFIX = struct.Struct(">4sBBHIII")
PREFIX_BYTES = _PREFIX.size  # 20
MAX_METADATA_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 256 << 20
MAX_DICOM_BYTES = 16 << 20
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class Body:
    payload: bytes
    metadata: dict = field(default_factory=dict)
    dicom: bytes | None = None


def _depth(value, level: int = 0) -> int:
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level + 1)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level + 1)
    return level


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def pack_body(payload: bytes, metadata: dict, dicom: bytes | None = None) -> bytes:
    """Serialise a body; ``metadata`` must be a JSON-serialisable dict (no NaN)."""
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        meta = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"metadata is not JSON-serialisable: {exc}") from None
    meta_bytes = meta.encode("utf-8")
    payload = bytes(payload)
    dicom_bytes = b"" if dicom is None else bytes(dicom)
    if dicom is not None and not dicom_bytes:
        raise FormatError("DICOM header is empty; pass None for no DICOM")
    for name, size, limit in (
        ("metadata", len(meta_bytes), MAX_METADATA_BYTES),
        ("payload", len(payload), MAX_PAYLOAD_BYTES),
        ("DICOM header", len(dicom_bytes), MAX_DICOM_BYTES),
    ):
        if size > limit:
            raise FormatError(f"{name} of {size} bytes exceeds the limit of {limit} bytes")
    if _depth(metadata) > MAX_JSON_DEPTH:
        raise FormatError(f"metadata nests deeper than {MAX_JSON_DEPTH} levels")
    flags = FLAG_DICOM if dicom is not None else 0
    prefix = _PREFIX.pack(MAGIC, VERSION, flags, 0, len(meta_bytes), len(payload), len(dicom_bytes))
    return prefix + meta_bytes + payload + dicom_bytes


def unpack_body(data: bytes) -> Body:
    """Parse a body strictly; :class:`FormatError` names the first defect."""
    data = bytes(data)
    if len(data) < PREFIX_BYTES:
        raise FormatError(f"sealed body truncated: {len(data)} bytes, its prefix alone is {PREFIX_BYTES}")
    magic, version, flags, reserved, m, p, d = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("sealed body has a bad magic (expected 'RSLB')")
    if version != VERSION:
        raise FormatError(f"unsupported sealed body version {version} (this radseal reads {VERSION})")
    if flags & ~FLAG_DICOM or reserved:
        raise FormatError(f"sealed body has reserved flags or bits set (flags 0x{flags:02x}, reserved 0x{reserved:04x})")
    for name, size, limit in (
        ("metadata", m, MAX_METADATA_BYTES),
        ("payload", p, MAX_PAYLOAD_BYTES),
        ("DICOM header", d, MAX_DICOM_BYTES),
    ):
        if size > limit:
            raise FormatError(f"sealed body: {name} length {size} exceeds the limit of {limit} bytes")
    if bool(flags & FLAG_DICOM) != (d > 0):
        raise FormatError("sealed body: DICOM flag and DICOM length disagree")
    expected = PREFIX_BYTES + m + p + d
    if len(data) != expected:
        raise FormatError(f"sealed body is {len(data)} bytes, its lengths announce {expected}")
    meta_bytes = data[PREFIX_BYTES : PREFIX_BYTES + m]
    try:
        metadata = json.loads(meta_bytes.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"sealed body: metadata is not valid UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(metadata, dict):
        raise FormatError(f"sealed body: metadata must be a JSON object, got {type(metadata).__name__}")
    if _depth(metadata) > MAX_JSON_DEPTH:
        raise FormatError(f"sealed body: metadata nests deeper than {MAX_JSON_DEPTH} levels")
    start = PREFIX_BYTES + m
    payload = data[start : start + p]
    dicom = data[start + p :] if d else None
    return Body(payload, metadata, dicom)
