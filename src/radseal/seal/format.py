"""The ``.rsl`` wire format: a fixed clear header, the HPKE ciphertext, a signature.

Layout (all integers big-endian; docs/format.md is the normative text)::

    offset size  field
         0    8  magic            89 52 53 4C 0D 0A 1A 0A  ("\\x89RSL\\r\\n\\x1a\\n")
         8    1  version          1
         9    1  suite            0x01, 0x02 (0xF0 reserved: insecure paper cipher)
        10    2  flags            0 (every bit reserved)
        12   16  recipient key id
        28   16  sender key id
        44   16  message id       random
        60    8  created          unix seconds
        68    4  ciphertext length n
        72    n  ciphertext       HPKE single-shot output: enc || AEAD ciphertext
      72+n   64  signature        Ed25519 over bytes [0, 72+n)

The 72-byte header is the HPKE ``info`` (so it enters the key schedule and any
change to it makes the AEAD tag fail) and, with the ciphertext, the signed
message.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives import hpke

from radseal.seal.errors import FormatError

MAGIC = b"\x89RSL\r\n\x1a\n"
VERSION = 1
_HEADER = struct.Struct(">8sBBH16s16s16sQI")
HEADER_BYTES = _HEADER.size  # 72
SIGNATURE_BYTES = 64
AEAD_TAG_BYTES = 16
MAX_CIPHERTEXT_BYTES = 256 * 1024 * 1024  # a radiograph body is far smaller; bounds memory


@dataclass(frozen=True)
class Suite:
    id: int
    name: str
    kem: str | None  # receiver key KEM, None for the insecure suite
    enc_bytes: int  # HPKE encapsulated key length
    insecure: bool = False

    def hpke_suite(self) -> hpke.Suite:
        kem = {"x25519": hpke.KEM.X25519, "mlkem768-x25519": hpke.KEM.MLKEM768_X25519}[self.kem]
        return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

    @property
    def min_ciphertext_bytes(self) -> int:
        return 0 if self.insecure else self.enc_bytes + AEAD_TAG_BYTES


SUITES = {
    s.id: s
    for s in (
        Suite(0x01, "hpke-x25519-sha256-chacha20poly1305+ed25519", "x25519", 32),
        Suite(0x02, "hpke-mlkem768x25519-sha256-chacha20poly1305+ed25519", "mlkem768-x25519", 1120),
        Suite(0xF0, "INSECURE-paper-baseline-no-encryption+ed25519", None, 0, insecure=True),
    )
}
SUITE_FOR_KEM = {s.kem: s for s in SUITES.values() if s.kem}
INSECURE_PAPER_SUITE = SUITES[0xF0]


@dataclass(frozen=True)
class Header:
    """The clear header: routing facts only, never patient data."""

    version: int
    suite_id: int
    recipient_key_id: str
    sender_key_id: str
    message_id: str
    created: int
    ciphertext_length: int

    @property
    def suite(self) -> str:
        return SUITES[self.suite_id].name

    @property
    def insecure(self) -> bool:
        return SUITES[self.suite_id].insecure

    def to_dict(self) -> dict:
        d = asdict(self)
        d["suite"] = self.suite
        return d

    def encode(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.suite_id,
            0,
            bytes.fromhex(self.recipient_key_id),
            bytes.fromhex(self.sender_key_id),
            bytes.fromhex(self.message_id),
            self.created,
            self.ciphertext_length,
        )


@dataclass(frozen=True)
class Parts:
    """A container split into its three parts (framing checked, nothing verified)."""

    header: Header
    header_bytes: bytes
    ciphertext: bytes
    signature: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.header_bytes + self.ciphertext


def parse_clear_header(head: bytes) -> Header:
    """Parse and check the first :data:`HEADER_BYTES` bytes of a container on their own.

    Everything :func:`split` checks except the total length, so that a reader
    receiving a container piece by piece can refuse a bad one after 72 bytes
    (the receiver does). :class:`FormatError` on any defect.
    """
    head = bytes(head)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise FormatError("not a radseal container (bad magic; expected a .rsl file)")
    if len(head) < HEADER_BYTES:
        raise FormatError(f"truncated container: {len(head)} bytes, the header alone is {HEADER_BYTES}")
    _magic, version, suite_id, flags, rid, sid, mid, created, n = _HEADER.unpack_from(head)
    if version != VERSION:
        raise FormatError(f"unsupported format version {version} (this radseal reads version {VERSION})")
    suite = SUITES.get(suite_id)
    if suite is None:
        known = ", ".join(f"0x{s:02x}" for s in SUITES)
        raise FormatError(f"unknown suite 0x{suite_id:02x} (known: {known})")
    if flags:
        raise FormatError(f"reserved header flags 0x{flags:04x} are set")
    if n > MAX_CIPHERTEXT_BYTES:
        raise FormatError(f"ciphertext length {n} exceeds the limit of {MAX_CIPHERTEXT_BYTES} bytes")
    if n < suite.min_ciphertext_bytes:
        raise FormatError(f"ciphertext length {n} is shorter than suite {suite.name} allows ({suite.min_ciphertext_bytes})")
    return Header(version, suite_id, rid.hex(), sid.hex(), mid.hex(), created, n)


def container_bytes(header: Header) -> int:
    """The total length of the container this header announces."""
    return HEADER_BYTES + header.ciphertext_length + SIGNATURE_BYTES


def split(data: bytes) -> Parts:
    """Parse and check the framing of a container; :class:`FormatError` on any defect."""
    data = bytes(data)
    header = parse_clear_header(data[:HEADER_BYTES])
    n = header.ciphertext_length
    expected = container_bytes(header)
    if len(data) < expected:
        raise FormatError(f"truncated container: {len(data)} bytes, the header announces {expected}")
    if len(data) > expected:
        raise FormatError(f"{len(data) - expected} unexpected bytes after the signature")
    return Parts(header, data[:HEADER_BYTES], data[HEADER_BYTES : HEADER_BYTES + n], data[HEADER_BYTES + n :])


def parse_header(data: bytes) -> Header:
    """The clear header of a container (framing checked; no keys needed, nothing verified)."""
    return split(data).header
