"""The learned codec: networks, deterministic entropy coding, bitstream, pretrained weights.

``from radseal.codec import Codec`` is cheap: torch is imported only when a
model is loaded.
"""

from radseal.codec.api import Codec
from radseal.codec.errors import BitstreamError, CodecError, UnknownModelError, WeightsError

__all__ = ["BitstreamError", "Codec", "CodecError", "UnknownModelError", "WeightsError"]
