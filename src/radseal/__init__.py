"""radseal: learned compression and authenticated sealing of radiographs.

The names below load on first use (PEP 562), so that ``import radseal`` and
commands that need no DICOM stack (``--help``, ``keygen``, ``inspect``) do not
pay for importing pydicom.
"""

__version__ = "0.1.0"

__all__ = ["Codec", "Image", "RadsealError", "open_sealed", "read_image", "seal", "write_image", "__version__"]

_HOMES = {
    "RadsealError": "radseal.errors",
    "Image": "radseal.image",
    "Codec": "radseal.codec",
    "read_image": "radseal.io",
    "write_image": "radseal.io",
    "open_sealed": "radseal.seal",
}


def __getattr__(name: str):
    import importlib

    if name == "seal":  # the package, callable as the function seal()
        return importlib.import_module("radseal.seal")
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'radseal' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
