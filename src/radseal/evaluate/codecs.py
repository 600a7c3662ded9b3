"""The codecs an evaluation compares, behind one small shape.

Each :class:`CodecUnderTest` is a family of operating points
(:class:`Setting`): radseal's learned codec at each quality level, each
classic baseline at a ladder of target bit rates (so all codecs are compared
at matched bpp), and the paper's autoencoder at its single operating point.
Every payload is the bytes that would cross the wire.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from radseal.errors import RadsealError
from radseal.image import Image

# 30:1 on 8-bit data (Canadian guidance for CR chest): the rate every codec is judged at.
TARGET_RATIO = 30.0
TARGET_BPP_8BIT = round(8 / TARGET_RATIO, 3)
# 160:1, 60:1, 30:1 and 15:1 on 8-bit data: low enough to find where codecs start to fail.
DEFAULT_BPP_LADDER = (0.05, 0.133, 0.267, 0.533)


class EvaluationError(RadsealError):
    """An evaluation cannot run as asked (unknown codec, no images, bad option)."""


@dataclass(frozen=True)
class Setting:
    """One operating point: ``quality`` for radseal, ``bpp`` target for baselines, neither for fixed codecs."""

    label: str
    quality: int | None = None
    bpp: float | None = None


@dataclass
class CodecUnderTest:
    name: str  # short id used on the command line and in file names
    display: str  # human name for plots and tables
    settings: list[Setting]
    compress: Callable[[Image, Setting], bytes]
    decompress: Callable[[bytes], Image]
    identity: str = ""  # changes when the weights or library change (cache key)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def bpp_label(bpp: float) -> str:
    return f"{bpp:g} bpp"


# -- radseal's codec --------------------------------------------------------------------
def radseal_codec(qualities: Sequence[int] | None = None) -> CodecUnderTest:
    from radseal.codec import Codec

    codec = Codec.pretrained()
    # By default the levels of the 8-bit range (1..16): the evaluation's images are 8-bit chest X-rays and
    # its baselines stop near 1.5 bpp; the levels above reach near-lossless at 10-16 bits.
    qs = list(qualities) if qualities else default_qualities(codec.qualities[:16])
    bad = [q for q in qs if q not in codec.qualities]
    if bad:
        raise EvaluationError(f"radseal codec qualities must be in {codec.qualities[0]}..{codec.qualities[-1]}, got {bad}")
    # Besides the quality levels, one point at exactly the 30:1 budget (the codec's own bpp mode).
    settings = [Setting(f"q{q}", quality=q) for q in qs] + [Setting(bpp_label(TARGET_BPP_8BIT), bpp=TARGET_BPP_8BIT)]

    shared: dict = {"img": None, "streams": {}}

    def compress(img: Image, s: Setting) -> bytes:
        if s.quality is None:
            return codec.compress(img, bpp=s.bpp)
        if not hasattr(codec, "compress_qualities"):
            return codec.compress(img, quality=s.quality)
        if shared["img"] is not img:  # one analysis transform for all levels of this image
            shared["img"], shared["streams"] = img, codec.compress_qualities(img, qs)
        return shared["streams"][s.quality]

    return CodecUnderTest(
        name="radseal",
        display=f"radseal ({codec.model_id})",
        settings=settings,
        compress=compress,
        decompress=codec.decompress,
        identity=f"{codec.model_id}:{codec.info.get('sha256', '')}",
        notes="encode time of the first quality level includes the analysis transform shared by all levels",
    )


def default_qualities(available: Sequence[int], count: int = 5) -> list[int]:
    """``count`` levels spread evenly over ``available`` (ends included)."""
    avail = list(available)
    if len(avail) <= count:
        return avail
    idx = np.linspace(0, len(avail) - 1, count).round().astype(int)
    return sorted({avail[i] for i in idx})


# -- classic baselines (radseal.baselines) -------------------------------------------------
def _knob(baseline, high_depth: bool):
    from radseal.evaluate.ratecontrol import Knob

    sweep = baseline.sweep_high_depth if high_depth else baseline.sweep
    integer = baseline.param_name == "quality"  # JPEG and AVIF take whole numbers
    # JPEG XL's distance acts multiplicatively on the rate; the other knobs roughly linearly in log-rate.
    return Knob(low=sweep[0], high=sweep[-1], integer=integer, log=baseline.param_name == "distance")


def baseline_codec(name: str, ladder: Sequence[float]) -> CodecUnderTest:
    """A lossy baseline at each target of ``ladder`` (bpp), its knob searched per image."""
    from radseal.baselines import get_baseline
    from radseal.evaluate.ratecontrol import RateController

    try:
        codec = get_baseline(name)
    except RadsealError as exc:
        raise EvaluationError(str(exc)) from None
    if codec.lossless:
        raise EvaluationError(f"baseline '{name}' is lossless; the evaluation compares lossy codecs at matched rates")
    controllers: dict = {}

    def compress(img: Image, s: Setting) -> bytes:
        high = img.bits_stored > 8
        ctl = controllers.setdefault((s.bpp, high), RateController(_knob(codec, high)))
        data, _value = ctl.encode_at_bpp(lambda v: codec.compress(img, v), img.height * img.width, s.bpp)
        return data

    try:
        import imagecodecs

        version = imagecodecs.__version__
    except ImportError:
        version = ""
    return CodecUnderTest(
        name=name,
        display=_BASELINE_NAMES.get(name, name),
        settings=[Setting(bpp_label(b), bpp=float(b)) for b in ladder],
        compress=compress,
        decompress=codec.decompress,
        identity=f"{name}:imagecodecs-{version}",
        notes=f"{codec.param_name} searched per image for the highest quality within the target rate",
        extra={"controllers": controllers},
    )


_BASELINE_NAMES = {"jpeg": "JPEG (libjpeg-turbo)", "jpeg2000": "JPEG 2000 (OpenJPEG)", "jpegxl": "JPEG XL (libjxl e7)", "avif": "AVIF (libaom)"}


def baseline_names() -> list[str]:
    """The lossy baselines that radseal.baselines provides (none if it is absent)."""
    try:
        from radseal.baselines import BASELINES
    except ImportError:
        return []
    return [n for n, b in BASELINES.items() if not b.lossless]


# -- the paper's autoencoder ------------------------------------------------------------------
_PAPER_HEADER = struct.Struct("<IIBB?")  # height, width, bits_stored, MONOCHROME1?, signed


def paper_codec() -> CodecUnderTest:
    """The paper's system as a codec: 200x200 padded view -> float32 latent -> decoder -> native size.

    The payload is what the paper sends: the latent as float32 (its square-add
    "encryption" keeps the size), plus an 11-byte header with the original
    shape so the reconstruction can be put back at native resolution
    (un-padded, resized with a bilinear filter) for PSNR and the classifier.
    """
    from radseal.extras import require

    torch = require("torch", "paper", "evaluating the paper's autoencoder")

    from radseal.io.dataset import fixed_size
    from radseal.paper.autoencoder import INPUT_SIZE, load_autoencoder, shipped_weights_path

    path = shipped_weights_path()
    model, _meta = load_autoencoder(path)

    def compress(img: Image, _s: Setting) -> bytes:
        x = torch.from_numpy(fixed_size(img, INPUT_SIZE))[None, None]
        with torch.no_grad():
            z = model.encode(x).numpy().astype("<f4")
        head = _PAPER_HEADER.pack(img.height, img.width, img.bits_stored, img.photometric == "MONOCHROME1", img.signed)
        return head + z.tobytes()

    def decompress(data: bytes) -> Image:
        h, w, bits, mono1, signed = _PAPER_HEADER.unpack_from(data)
        c, hl, wl = model.latent_shape(INPUT_SIZE)
        z = np.frombuffer(data, dtype="<f4", offset=_PAPER_HEADER.size).reshape(1, c, hl, wl)
        with torch.no_grad():
            view = model.decode(torch.from_numpy(z.copy())).numpy()[0, 0]
        display = _unpad_resize(view, h, w, INPUT_SIZE)
        stored = 1.0 - display if mono1 else display
        peak = (1 << bits) - 1
        pixels = np.clip(np.rint(stored * peak), 0, peak).astype(np.uint8 if bits <= 8 else np.uint16)
        return Image(pixels, bits_stored=bits, photometric="MONOCHROME1" if mono1 else "MONOCHROME2", signed=signed)

    return CodecUnderTest(
        name="paper",
        display="paper autoencoder (float32 latent)",
        settings=[Setting("latent f32")],
        compress=compress,
        decompress=decompress,
        identity=f"paper:{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}",
        notes="sees a 200x200 padded view; reconstruction resized back to native size",
    )


def _unpad_resize(view: np.ndarray, h: int, w: int, size: int) -> np.ndarray:
    """Undo :func:`radseal.io.dataset.fixed_size`: cut the padding, resize to ``h`` x ``w``."""
    from PIL import Image as PILImage

    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - nh) // 2, (size - nw) // 2
    inner = np.ascontiguousarray(view[top : top + nh, left : left + nw], dtype=np.float32)
    out = PILImage.fromarray(inner, mode="F").resize((w, h), PILImage.Resampling.BILINEAR)
    return np.clip(np.asarray(out), 0.0, 1.0)


# -- selection ---------------------------------------------------------------------------
def build_codecs(names: Sequence[str] | None, qualities: Sequence[int] | None = None, ladder: Sequence[float] = DEFAULT_BPP_LADDER) -> list[CodecUnderTest]:
    """Codecs by name (``radseal``, ``paper``, or a baseline name); None means all available."""
    wanted = list(names) if names else ["radseal", *baseline_names(), "paper"]
    out = []
    for name in wanted:
        if name == "radseal":
            out.append(radseal_codec(qualities))
        elif name == "paper":
            out.append(paper_codec())
        else:
            known = baseline_names()
            if name not in known:
                raise EvaluationError(f"unknown codec '{name}' (known: radseal, paper{''.join(', ' + k for k in known)})")
            out.append(baseline_codec(name, ladder))
    return out
