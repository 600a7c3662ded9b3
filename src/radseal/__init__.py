"""radseal: learned compression and authenticated sealing of radiographs."""

from radseal.errors import RadsealError
from radseal.image import Image
from radseal.codec import Codec
from radseal.io import read_image, write_image
from radseal import seal  # the package, callable as the function seal()
from radseal.seal import open_sealed

__version__ = "0.1.0"

__all__ = ["Codec", "Image", "RadsealError", "open_sealed", "read_image", "seal", "write_image", "__version__"]
