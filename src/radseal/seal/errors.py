"""The ways opening or reading sealed material can fail.

Like ``cryptography``'s ``InvalidToken``, :class:`AuthenticationError` never
says which check failed (signature or AEAD tag, which byte): a caller learns
"not authentic" and nothing an attacker could use as an oracle. Errors raised
*before* any cryptography (a malformed header, an unknown sender key id) may
say precisely what is wrong, because they depend only on public bytes.
"""

from __future__ import annotations

from radseal.errors import RadsealError


class SealError(RadsealError):
    """Base class of the errors of :mod:`radseal.seal` and :mod:`radseal.container`."""


class FormatError(SealError):
    """Malformed container or body: bad magic, lengths, limits, unknown version or suite."""


class AuthenticationError(SealError):
    """The signature or the AEAD tag does not verify (deliberately without detail)."""


class UnknownSenderError(SealError):
    """The container is signed by a device key that is not among the trusted keys."""


class WrongRecipientError(SealError):
    """The container is sealed for a receiver key that was not given."""


class KeyFileError(SealError):
    """A key file is missing, malformed, of the wrong kind, or its passphrase is wrong."""
