"""Errors of the learned codec."""

from radseal.errors import RadsealError


class CodecError(RadsealError):
    """A bitstream, weights file or request the codec cannot handle."""


class BitstreamError(CodecError):
    """A compressed stream that is corrupted, truncated or not a radseal stream."""


class UnknownModelError(CodecError):
    """A stream or request names a model id this installation does not have."""


class WeightsError(CodecError):
    """Shipped or given weights are missing, damaged or do not match the model."""
