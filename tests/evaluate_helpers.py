"""Small inputs for the evaluation tests: a tiny labelled data folder and a PIL-JPEG codec."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from radseal.evaluate.codecs import CodecUnderTest, Setting
from radseal.image import Image
from radseal.io import read_image, write_png


def make_tiny_dataset(root: Path, rg1_path, rg3_path, per_class: int = 2, side: int = 192) -> Path:
    """``root/test/{NORMAL,PNEUMONIA}/*.png``: crops of the pydicom-data radiographs at 8 bits."""
    sources = [read_image(rg1_path), read_image(rg3_path)]
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        d = root / "test" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            src = sources[(i + label) % 2]
            x = src.display_pixels()
            h, w = x.shape
            off = 97 * (i + 2 * label)
            crop = x[h // 4 + off : h // 4 + off + h // 2, w // 4 : w // 4 + w // 2 + 40 * i]
            small = PILImage.fromarray((crop * 255).astype(np.uint8)).resize((side + 24 * i, side), PILImage.Resampling.BOX)
            write_png(Image(np.asarray(small), bits_stored=8), d / f"img{i}.png")
    return root


def pil_jpeg_codec(qualities=(10, 60)) -> CodecUnderTest:
    """JPEG through Pillow: a fast stand-in codec with the evaluation's shape."""

    def compress(img: Image, s: Setting) -> bytes:
        buf = io.BytesIO()
        PILImage.fromarray(img.pixels).save(buf, format="JPEG", quality=int(s.quality))
        return buf.getvalue()

    def decompress(data: bytes) -> Image:
        return Image(np.asarray(PILImage.open(io.BytesIO(data)).convert("L")), bits_stored=8)

    return CodecUnderTest(
        name="piljpeg",
        display="JPEG (Pillow)",
        settings=[Setting(f"q{q}", quality=q) for q in qualities],
        compress=compress,
        decompress=decompress,
        identity="pil",
    )
