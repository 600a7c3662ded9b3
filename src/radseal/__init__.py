"""radseal: learned compression and authenticated sealing of radiographs."""

from radseal.errors import RadsealError
from radseal.image import Image
from radseal.io import read_image, write_image

__version__ = "0.1.0"

__all__ = ["Image", "RadsealError", "read_image", "write_image", "__version__"]
