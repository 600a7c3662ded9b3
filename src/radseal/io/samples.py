"""Real radiographs that any machine can install: PyPI's pydicom-data.

pydicom's own ``get_testdata_file`` tries the network first for these
files; we read them straight from the installed ``data_store`` package so
that everything works offline.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from radseal.errors import ImageReadError

#: Named radiographs from the DICOM WG04 compression test set.
SAMPLES = {
    "RG1": "RG1_UNCR.dcm",  # chest CR, 1955x1841, 15 bits stored, MONOCHROME1
    "RG3": "RG3_UNCR.dcm",  # extremity CR, 10 bits stored
}


def sample_path(name: str = "RG1") -> Path:
    """Path of a bundled sample radiograph by short name (RG1, RG3) or file name."""
    filename = SAMPLES.get(name.upper(), name)
    try:
        root = resources.files("data_store") / "data"
    except ModuleNotFoundError:
        raise ImageReadError("sample radiographs need the 'pydicom-data' package (pip install pydicom-data)") from None
    path = Path(str(root / filename))
    if not path.is_file():
        raise ImageReadError(f"sample {name!r} not found in pydicom-data ({path})")
    return path
