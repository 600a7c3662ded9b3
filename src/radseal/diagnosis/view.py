"""The classifier's view of a radiograph: a centred square crop at a fixed size.

Why a crop and not the padded view of :func:`radseal.io.dataset.fixed_size`:
in the Kermany chest X-rays the two classes differ in shape as well as in
size (train: NORMAL width/height 1.23 on average, PNEUMONIA 1.52). Padding
a resized image to a square keeps the anatomy undistorted, but the height
of the padded bands then encodes the aspect ratio, and a network learns to
read the label off the bands. A centred square crop (side = the shorter
side) fills the whole input with anatomy for every image, so neither size
nor aspect ratio reaches the network. The price: the outer edges of very
wide images (arms, the sides of the ribcage) are cut. The measured leak of
each view is in docs/diagnosis.md.
"""

from __future__ import annotations

import numpy as np

from radseal.image import Image
from radseal.io.dataset import Sample, fixed_size

DEFAULT_SIZE = 224


def center_square(img: Image) -> Image:
    """The largest centred square of ``img`` (the same image if it is square)."""
    h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img.with_pixels(img.pixels[top : top + side, left : left + side])


def classifier_view(img: Image, size: int = DEFAULT_SIZE) -> np.ndarray:
    """``size`` x ``size`` float32 in [0, 1], bright = dense, centred square crop."""
    return fixed_size(center_square(img), size)


def load_views(samples: list[Sample], size: int = DEFAULT_SIZE, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Classifier views of ``samples``: (N, size, size) float32 and labels (-1 if none)."""
    from radseal.io import read_image

    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc=f"loading {size}x{size} views", unit="img", leave=False)
    views = [classifier_view(read_image(s.path), size) for s in it]
    xs = np.stack(views) if views else np.zeros((0, size, size), np.float32)
    ys = np.array([-1 if s.label is None else s.label for s in samples], dtype=np.int64)
    return xs, ys
