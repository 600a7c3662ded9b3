"""The self-describing byte format of one compressed image.

Layout (little-endian), version 1::

    offset  size  field
    0       4     magic b"RSLC"
    4       1     format version (1)
    5       1     length n of the model id (1..64)
    6       n     model id, ASCII
    6+n     4     height (pixels)
    +4      4     width (pixels)
    +1      1     bits stored (1..16)
    +1      1     flags: bit 0 MONOCHROME1, bit 1 signed
    +2      2     quality level (1..); for the native-depth coder the maximum error k (0 = lossless)
    +2      2     lowest stored value of the image (normalization)
    +2      2     highest stored value of the image
    +4      4     length of the entropy-coded payload in bytes
    ...           payload (32-bit ANS words)
    end-4   4     CRC-32 of every byte before it

Every size radseal reports is ``len()`` of these bytes, header and CRC
included. Parsing checks the CRC first and bounds all work by the declared
image size (at most ``MAX_PIXELS``), so a damaged stream ends in a
:class:`BitstreamError`, never a hang or a silently wrong image.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from radseal.codec.errors import BitstreamError

MAGIC = b"RSLC"
FORMAT_VERSION = 1
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 26  # 8192 x 8192: bounds decoder memory (about 1 GB of latent arrays)
_TAIL = struct.Struct("<IIBBHHHI")


@dataclass(frozen=True)
class Header:
    model_id: str
    height: int
    width: int
    bits_stored: int
    photometric: str
    signed: bool
    quality: int
    low: int
    high: int


def pack(header: Header, payload: bytes) -> bytes:
    mid = header.model_id.encode("ascii")
    if not 1 <= len(mid) <= 64:
        raise BitstreamError("model id must be 1..64 ASCII characters")
    flags = (1 if header.photometric == "MONOCHROME1" else 0) | (2 if header.signed else 0)
    body = (
        MAGIC
        + bytes([FORMAT_VERSION, len(mid)])
        + mid
        + _TAIL.pack(
            header.height,
            header.width,
            header.bits_stored,
            flags,
            header.quality,
            header.low,
            header.high,
            len(payload),
        )
        + payload
    )
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and validate; raise BitstreamError naming the first problem."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 6 or data[:4] != MAGIC:
        raise BitstreamError("not a radseal codec stream (bad magic)")
    if data[4] != FORMAT_VERSION:
        raise BitstreamError(f"unsupported codec stream version {data[4]} (this radseal reads {FORMAT_VERSION})")
    n = data[5]
    head_len = 6 + n + _TAIL.size
    if n == 0 or len(data) < head_len + 4:
        raise BitstreamError(f"codec stream truncated ({len(data)} bytes)")
    crc = struct.unpack("<I", data[-4:])[0]
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise BitstreamError("codec stream corrupted or truncated (CRC mismatch)")
    try:
        model_id = data[6 : 6 + n].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("model id in codec stream is not ASCII") from None
    h, w, bits, flags, quality, low, high, plen = _TAIL.unpack_from(data, 6 + n)
    if len(data) != head_len + plen + 4:
        raise BitstreamError(f"codec stream length {len(data)} does not match its header ({head_len + plen + 4})")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise BitstreamError(f"codec stream declares an unsupported image size {h}x{w}")
    if not 1 <= bits <= 16 or flags > 3:
        raise BitstreamError("codec stream header has invalid bit depth or flags")
    if high >= (1 << bits) or low > high:
        raise BitstreamError("codec stream header has an invalid value range")
    header = Header(
        model_id=model_id,
        height=h,
        width=w,
        bits_stored=bits,
        photometric="MONOCHROME1" if flags & 1 else "MONOCHROME2",
        signed=bool(flags & 2),
        quality=quality,
        low=low,
        high=high,
    )
    return header, data[head_len : head_len + plen]


def peek_header(data: bytes) -> Header:
    """The header of a stream (validated like :func:`unpack`)."""
    return unpack(data)[0]
