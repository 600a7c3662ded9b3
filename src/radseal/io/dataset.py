"""Image collections on disk, and the fixed-size view models train on.

Two layouts are understood:

* Kermany/Kaggle: ``ROOT/{train,test,val}/{NORMAL,PNEUMONIA}/*`` (any
  subset of splits). Labels come from the class folder.
* A flat folder of DICOM (or PNG/JPEG) files with no labels.

Fixed-size view: the image is scaled so that its *longer* side fits
``size`` (aspect ratio kept, area-averaging filter), then centred and
padded with zeros (black in the display view) to a square.
Padding rather than stretching keeps anatomy undistorted, and it stops a
model from reading the label off the aspect ratio, which differs between
the classes in the Kermany data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from radseal.errors import DatasetError
from radseal.image import Image

CLASSES = ("NORMAL", "PNEUMONIA")
SPLITS = ("train", "test", "val")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".dcm", ".dicom"}


def default_data_dir() -> Path | None:
    """``$RADSEAL_DATA``, else ``../shared/data/cxr`` beside the checkout or the working folder."""
    env = os.environ.get("RADSEAL_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [Path.cwd() / "../shared/data/cxr"]
    candidates += [p / "../shared/data/cxr" for p in here.parents[:5]]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def resolve_data_dir(data: str | Path | None) -> Path:
    """The folder to use, or a clear error if there is none."""
    if data is not None:
        p = Path(data)
        if not p.is_dir():
            raise DatasetError(f"{p}: data folder does not exist")
        return p
    found = default_data_dir()
    if found is None:
        raise DatasetError("no data folder given and ../shared/data/cxr not found; pass --data DIR")
    return found


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int | None  # 0 NORMAL, 1 PNEUMONIA, None unlabelled
    split: str | None


def list_samples(root: str | Path, split: str | None = None) -> list[Sample]:
    """Every image under ``root`` in a known layout, sorted for reproducibility."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder does not exist")
    splits = [s for s in SPLITS if (root / s).is_dir()]
    samples: list[Sample] = []
    if splits:
        wanted = [split] if split else splits
        if split and split not in splits:
            raise DatasetError(f"{root}: has no '{split}' split (found: {', '.join(splits)})")
        for s in wanted:
            for label, cls in enumerate(CLASSES):
                d = root / s / cls
                if d.is_dir():
                    samples += [Sample(p, label, s) for p in sorted(d.iterdir()) if _is_image(p)]
    else:
        if split:
            raise DatasetError(f"{root}: flat folder has no splits; cannot select '{split}'")
        samples = [Sample(p, None, None) for p in sorted(root.iterdir()) if _is_image(p)]
    if not samples:
        raise DatasetError(f"{root}: no images found (expected {{train,test}}/{{NORMAL,PNEUMONIA}}/ or image files)")
    return samples


def _is_image(p: Path) -> bool:
    return p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == "")


def fixed_size(img: Image, size: int = 200) -> np.ndarray:
    """``size`` x ``size`` float32 in [0, 1], bright = dense, aspect kept, padded."""
    x = img.display_pixels()
    h, w = x.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(PILImage.fromarray(x, mode="F").resize((nw, nh), PILImage.Resampling.BOX if scale < 1 else PILImage.Resampling.BILINEAR))
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return np.clip(out, 0.0, 1.0)


def load_fixed(samples: list[Sample], size: int = 200, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stack the fixed-size view of each sample: (N, size, size) float32 and labels (-1 if none)."""
    from radseal.io import read_image

    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc=f"loading {size}x{size}", unit="img", leave=False)
    xs = np.stack([fixed_size(read_image(s.path), size) for s in it]) if samples else np.zeros((0, size, size), np.float32)
    ys = np.array([-1 if s.label is None else s.label for s in samples], dtype=np.int64)
    return xs, ys


def recorded_path(folder: str | Path) -> str:
    """``folder`` as a committed record keeps it: relative to the checkout (``../shared/data/cxr``),
    or just its name when it lies elsewhere; never an absolute path of the machine that made it."""
    import os

    repo = Path(__file__).resolve().parents[3]
    rel = os.path.relpath(Path(folder).resolve(), repo)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else Path(folder).name
