"""Sealing: HPKE (RFC 9180) encryption to a receiver and an Ed25519 device signature.

The recipe layer, in the spirit of ``cryptography.fernet``::

    receiver = ReceiverKey.generate()                 # or kem="mlkem768-x25519"
    device = DeviceKey.generate()
    data = seal(body, receiver.public_key(), device)  # the whole .rsl file
    opened = open_sealed(data, receiver, trusted=[device.public_key()])
    opened.body, opened.header.message_id

The format is specified in docs/format.md.
"""

import sys
import types

from radseal.seal.errors import (
    AuthenticationError,
    FormatError,
    KeyFileError,
    SealError,
    UnknownSenderError,
    WrongRecipientError,
)
from radseal.seal.format import HEADER_BYTES, MAGIC, SUITES, Header, parse_header
from radseal.seal.keys import (
    KEMS,
    DeviceKey,
    DevicePublicKey,
    ReceiverKey,
    ReceiverPublicKey,
    load_device_key,
    load_private_key,
    load_public_key,
    load_receiver_key,
    load_receiver_public_key,
    load_trusted,
    save_private_key,
    save_public_key,
)
from radseal.seal.sealing import Opened, open_sealed, overhead_bytes, seal

__all__ = [
    "AuthenticationError",
    "DeviceKey",
    "DevicePublicKey",
    "FormatError",
    "HEADER_BYTES",
    "Header",
    "KEMS",
    "KeyFileError",
    "MAGIC",
    "Opened",
    "ReceiverKey",
    "ReceiverPublicKey",
    "SUITES",
    "SealError",
    "UnknownSenderError",
    "WrongRecipientError",
    "load_device_key",
    "load_private_key",
    "load_public_key",
    "load_receiver_key",
    "load_receiver_public_key",
    "load_trusted",
    "open_sealed",
    "overhead_bytes",
    "parse_header",
    "save_private_key",
    "save_public_key",
    "seal",
]


class _CallableModule(types.ModuleType):
    """``radseal.seal`` is both this package and the function ``seal``.

    The design promises ``radseal.seal(body, recipient, signer)`` while
    ``radseal.seal.ReceiverKey`` etc. live here; calling the package calls
    :func:`radseal.seal.seal`, so both spellings work.
    """

    def __call__(self, *args, **kwargs) -> bytes:
        return seal(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
