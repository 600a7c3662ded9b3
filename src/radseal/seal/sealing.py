"""``seal`` and ``open_sealed``: the recipe layer over HPKE and Ed25519.

Sealing: HPKE single-shot base mode (RFC 9180) to the receiver's public key,
with the clear header as ``info``; then an Ed25519 signature by the device
over header and ciphertext. Opening checks, in this order: framing, that the
sender is trusted, the signature, that the container is for one of our keys,
and only then decrypts. No plaintext is produced from unverified bytes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable

from cryptography.exceptions import InvalidTag

from radseal.seal.errors import AuthenticationError, FormatError, UnknownSenderError, WrongRecipientError
from radseal.seal.format import (
    AEAD_TAG_BYTES,
    HEADER_BYTES,
    INSECURE_PAPER_SUITE,
    MAX_CIPHERTEXT_BYTES,
    SUITE_FOR_KEM,
    SUITES,
    VERSION,
    Header,
    split,
)
from radseal.seal.keys import DeviceKey, DevicePublicKey, ReceiverKey, ReceiverPublicKey

MESSAGE_ID_BYTES = 16
_NOT_AUTHENTIC = "container is not authentic (signature or ciphertext does not verify)"


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted container.

    ``header.message_id`` is exposed so that a receiver can detect replays:
    a container is authentic every time it is presented, so rejecting (or
    acknowledging without storing again) a message id already seen is the
    receiver's job, not this function's.
    """

    header: Header
    body: bytes


def seal(
    body: bytes,
    recipient: ReceiverPublicKey,
    signer: DeviceKey,
    *,
    message_id: bytes | None = None,
    created: int | None = None,
    insecure_paper_cipher: bool = False,
) -> bytes:
    """Seal ``body`` for ``recipient``, signed by ``signer``; returns the whole .rsl file.

    ``insecure_paper_cipher=True`` writes suite 0xF0: the body travels as
    given, WITHOUT encryption, still signed. It carries the paper baseline,
    whose square-add "cipher" offers no confidentiality; reproduction only.
    """
    if not isinstance(recipient, ReceiverPublicKey):
        raise TypeError(f"recipient must be a ReceiverPublicKey, got {type(recipient).__name__}")
    if not isinstance(signer, DeviceKey):
        raise TypeError(f"signer must be a DeviceKey, got {type(signer).__name__}")
    body = bytes(body)
    message_id = os.urandom(MESSAGE_ID_BYTES) if message_id is None else bytes(message_id)
    if len(message_id) != MESSAGE_ID_BYTES:
        raise ValueError(f"message_id must be {MESSAGE_ID_BYTES} bytes, got {len(message_id)}")
    created = int(time.time()) if created is None else int(created)
    if not 0 <= created < 1 << 64:
        raise ValueError(f"created must be unix seconds in 0..2^64-1, got {created}")
    suite = INSECURE_PAPER_SUITE if insecure_paper_cipher else SUITE_FOR_KEM[recipient.kem]
    n = len(body) + suite.min_ciphertext_bytes
    if n > MAX_CIPHERTEXT_BYTES:
        raise FormatError(f"body of {len(body)} bytes exceeds the container limit of {MAX_CIPHERTEXT_BYTES} bytes")
    header = Header(VERSION, suite.id, recipient.key_id, signer.key_id, message_id.hex(), created, n)
    header_bytes = header.encode()
    if suite.insecure:
        ciphertext = body
    else:
        ciphertext = suite.hpke_suite().encrypt(body, recipient.hpke_public_key(), info=header_bytes)
    if len(ciphertext) != n:  # the library's framing is part of our format
        raise AssertionError(f"HPKE output of {len(ciphertext)} bytes, expected {n}")
    signed = header_bytes + ciphertext
    return signed + signer.sign(signed)


def _as_list(items, kind) -> list:
    """One key or an iterable of keys, each checked (a path here is a caller's bug)."""
    items = [items] if isinstance(items, kind) else list(items)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"expected {kind.__name__} objects, got {type(item).__name__} (load key files first)")
    return items


def open_sealed(
    data: bytes,
    keys: ReceiverKey | Iterable[ReceiverKey],
    trusted: DevicePublicKey | Iterable[DevicePublicKey],
    *,
    allow_insecure_paper_cipher: bool = False,
) -> Opened:
    """Verify and decrypt a container.

    ``keys`` may hold several receiver keys (old and new during rotation): the
    one whose key id the header names is used. Raises :class:`FormatError`,
    :class:`UnknownSenderError`, :class:`AuthenticationError` or
    :class:`WrongRecipientError`; never returns unverified plaintext.
    """
    parts = split(data)
    header = parts.header
    suite = SUITES[header.suite_id]
    if suite.insecure and not allow_insecure_paper_cipher:
        raise FormatError(
            f"suite 0x{suite.id:02x} ({suite.name}) is the paper baseline without encryption; "
            "refused unless --insecure-paper-cipher is given"
        )
    devices = {d.key_id: d for d in _as_list(trusted, DevicePublicKey)}
    device = devices.get(header.sender_key_id)
    if device is None:
        raise UnknownSenderError(
            f"sender key {header.sender_key_id} is not among the {len(devices)} trusted device key(s)"
        )
    if not device.verify(parts.signature, parts.signed_bytes):
        raise AuthenticationError(_NOT_AUTHENTIC)
    receivers = {k.key_id: k for k in _as_list(keys, ReceiverKey)}
    key = receivers.get(header.recipient_key_id)
    if key is None:
        given = ", ".join(receivers) or "none"
        raise WrongRecipientError(
            f"sealed for receiver key {header.recipient_key_id}, not for the given key(s): {given}"
        )
    if suite.insecure:
        return Opened(header, parts.ciphertext)
    if key.kem != suite.kem:
        raise FormatError(f"suite {suite.name} needs a {suite.kem} receiver key; key {key.key_id} is {key.kem}")
    try:
        body = suite.hpke_suite().decrypt(parts.ciphertext, key.hpke_private_key(), info=parts.header_bytes)
    except InvalidTag:
        raise AuthenticationError(_NOT_AUTHENTIC) from None
    return Opened(header, body)


def overhead_bytes(kem: str) -> int:
    """Bytes a container adds to its body for a receiver key of this KEM."""
    suite = SUITE_FOR_KEM[kem]
    return HEADER_BYTES + suite.enc_bytes + AEAD_TAG_BYTES + 64
