"""``Codec``: compress an :class:`~radseal.image.Image` to bytes and back.

``Codec`` holds what every model family shares: the byte format, the
normalization of native-depth pixels to 0..1 and back, quality and ``bpp=``
selection, and dispatch of a stream to the model that made it. A family
(``radseal.codec.subband``: wavelet + learned context model, the default;
``radseal.codec.hyperprior``: the neural hyperprior) supplies four hooks:
``_analyse``, ``_encode``, ``_decode`` and ``num_qualities``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from radseal.codec import bitstream
from radseal.codec.errors import BitstreamError, CodecError, UnknownModelError, WeightsError
from radseal.codec.weights import load_npz, resolve
from radseal.image import Image


def _family(state: dict[str, np.ndarray]) -> str:
    try:
        config = json.loads(bytes(state["config"]).decode("utf-8"))
    except KeyError:
        raise WeightsError("codec weights lack their config") from None
    except (UnicodeDecodeError, ValueError):
        raise WeightsError("codec weights have an unreadable config") from None
    return config.get("family", "hyperprior") if isinstance(config, dict) else "?"


def _from_state(state: dict[str, np.ndarray], model_id: str, info: dict | None) -> "Codec":
    # A registry entry may run a weights file under another family (rsc3 codes rsc2's quantizer).
    if info is not None and info.get("family") == "seq":
        from radseal.codec.seq import SeqCodec

        return SeqCodec.from_state(state, model_id, info)
    family = _family(state)
    if family == "subband":
        from radseal.codec.subband import SubbandCodec

        return SubbandCodec.from_state(state, model_id, info)
    if family == "native":
        from radseal.codec.native import NativeCodec

        return NativeCodec.from_state(state, model_id, info)
    if family == "hyperprior":
        from radseal.codec.hyperprior import HyperpriorCodec

        return HyperpriorCodec.from_state(state, model_id, info)
    raise WeightsError(f"codec weights are of unknown family {family!r}")


class Codec:
    """A trained codec with one set of weights.

    >>> codec = Codec.pretrained()
    >>> data = codec.compress(img, quality=8)        # or bpp=0.3
    >>> img2 = codec.decompress(data)                 # same size, bit depth, photometric
    """

    num_qualities = 16
    family = "?"

    def __init__(self, model_id: str, info: dict | None = None):
        self.model_id = model_id
        self.info = dict(info or {})

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def pretrained(cls, model_id: str | None = None, weights_dir: str | Path | None = None) -> "Codec":
        """The shipped weights (offline); ``model_id`` None means the registry's default."""
        mid, path, entry = resolve(model_id, Path(weights_dir) if weights_dir else None)
        return _from_state(load_npz(path), mid, entry)

    @classmethod
    def from_file(cls, path: str | Path, model_id: str = "local") -> "Codec":
        """Weights from an exported ``.npz`` outside the registry (experiments)."""
        return _from_state(load_npz(Path(path)), model_id, None)

    # -- description -----------------------------------------------------------------------
    @property
    def qualities(self) -> tuple[int, ...]:
        """Valid ``quality`` values, low (smallest files) to high."""
        return tuple(range(1, self.num_qualities + 1))

    @property
    def default_quality(self) -> int:
        """The quality of the old fixed default; ``compress`` without a setting now picks per image
        (:mod:`radseal.codec.default_rate`)."""
        return 10

    #: What ``compress`` does without ``quality``, ``bpp`` or ``max_error`` (for help texts).
    DEFAULT_RATE_TEXT = ("per image, the lowest setting whose PSNR is at least that of JPEG 2000 "
                         "(OpenJPEG) at 30:1 of the stored size")

    # -- coding ----------------------------------------------------------------------------
    def compress(self, img: Image, quality: int | None = None, bpp: float | None = None,
                 max_error: int | None = None) -> bytes:
        """Compress ``img``. Give ``quality`` (see :attr:`qualities`), a target ``bpp``, or ``max_error``.

        With none of the three, the rate is chosen per image: the lowest setting whose
        PSNR is at least that of JPEG 2000 at 30:1 (:mod:`radseal.codec.default_rate`).

        With ``bpp`` the highest quality whose stream fits the target is chosen
        (the lowest quality if none fits); when even the highest quality leaves
        budget over, the native-depth coder's stream with the smallest maximum
        error that fits is taken instead if it is more faithful (lower squared
        error), up to lossless: the rate ladder does not stop at the lossy
        family's precision. ``max_error=0`` is lossless;
        ``max_error=k`` guarantees ``|decoded - stored| <= k`` on every pixel
        (both by the native-depth coder, :mod:`radseal.codec.native`, whose
        streams every codec decodes).
        """
        if max_error is not None:
            if quality is not None or bpp is not None:
                raise CodecError("give max_error, or quality or bpp, not both")
            from radseal.codec.native import default_native

            return default_native().compress_native(img, max_error)
        if quality is not None and bpp is not None:
            raise CodecError("give quality or bpp, not both")
        if bpp is None and quality is None:
            from radseal.codec.default_rate import compress_default

            return compress_default(self, img)
        if bpp is None:
            return self.compress_qualities(img, [quality])[quality]
        if not (math.isfinite(bpp) and bpp > 0):
            raise CodecError(f"bpp must be a positive number, got {bpp}")
        encode = self._encoder(img)
        budget = bpp * img.height * img.width / 8.0
        lo_q, hi_q = self.qualities[0], self.qualities[-1]
        best = encode(lo_q)
        if len(best) > budget:
            return best
        top = hi_q
        best_q = lo_q
        lo_q += 1
        while lo_q <= hi_q:  # binary search: highest quality that fits
            mid = (lo_q + hi_q) // 2
            data = encode(mid)
            if len(data) <= budget:
                best, best_q, lo_q = data, mid, mid + 1
            else:
                hi_q = mid - 1
        if best_q == top:
            return self._beyond_top_quality(img, best, budget)
        return best

    def _beyond_top_quality(self, img: Image, best: bytes, budget: float) -> bytes:
        """The native-depth stream with the smallest max error that fits ``budget``, if it is
        more faithful than ``best`` (the top quality's stream), or as faithful and smaller; else ``best``."""
        from radseal.codec.native import default_native

        native = default_native()
        lo, hi = 0, int(img.pixels.max()) - int(img.pixels.min())
        found = None
        while lo <= hi:  # smallest k whose stream fits
            k = (lo + hi) // 2
            data = native.compress_native(img, k)
            if len(data) <= budget:
                found, hi = data, k - 1
            else:
                lo = k + 1
        if found is None:
            return best
        ref = img.pixels.astype(np.float64)

        def sq_error(data: bytes) -> float:
            return float(np.sum((self.decompress(data).pixels.astype(np.float64) - ref) ** 2))

        e_found, e_best = sq_error(found), sq_error(best)
        # more faithful, or as faithful in fewer bytes (the top quality may already be lossless)
        return found if e_found < e_best or (e_found == e_best and len(found) < len(best)) else best

    def compress_qualities(self, img: Image, qualities) -> dict[int, bytes]:
        """One stream per quality, sharing the analysis transform (for sweeps)."""
        qs = list(qualities)
        for q in qs:
            if not isinstance(q, (int, np.integer)) or int(q) not in self.qualities:
                raise CodecError(f"quality must be an integer in {self.qualities[0]}..{self.qualities[-1]}, got {q!r}")
        encode = self._encoder(img)
        return {int(q): encode(int(q)) for q in qs}

    def _encoder(self, img: Image):
        """Analyse ``img`` once; return quality -> bytes."""
        if not isinstance(img, Image):
            raise CodecError(f"compress expects a radseal Image, got {type(img).__name__}")
        h, w = img.shape
        if h < 1 or w < 1 or h > bitstream.MAX_SIDE or w > bitstream.MAX_SIDE or h * w > bitstream.MAX_PIXELS:
            raise CodecError(f"image size {h}x{w} is outside what the codec supports")
        low, high = int(img.pixels.min()), int(img.pixels.max())
        state = self._analyse_image(img.pixels, low, high)

        def encode(q: int) -> bytes:
            header = bitstream.Header(
                model_id=self.model_id,
                height=h,
                width=w,
                bits_stored=img.bits_stored,
                photometric=img.photometric,
                signed=bool(img.signed),
                quality=q,
                low=low,
                high=high,
            )
            return bitstream.pack(header, self._encode(state, h, w, q))

        return encode

    def decompress(self, data: bytes) -> Image:
        """Decode a stream made by :meth:`compress` into an Image at its native bit depth."""
        header, payload = bitstream.unpack(data)
        if header.model_id != self.model_id:
            from radseal.codec.native import MODEL_ID as NATIVE_ID, default_native

            try:
                other = default_native() if header.model_id == NATIVE_ID else Codec.pretrained(header.model_id)
            except UnknownModelError:
                raise UnknownModelError(
                    f"stream was made by codec model {header.model_id!r}, which is not installed (this codec: {self.model_id!r})"
                ) from None
            return other.decompress(data)
        if header.quality not in self.qualities:
            raise BitstreamError(f"stream declares quality {header.quality}, outside {self.qualities[0]}..{self.qualities[-1]}")
        x = self._decode(payload, header.height, header.width, header.quality)
        dtype = np.uint8 if header.bits_stored <= 8 else np.uint16
        return Image(
            pixels=stored(x, header.low, header.high, dtype),
            bits_stored=header.bits_stored,
            photometric=header.photometric,
            signed=header.signed,
            metadata={"codec": self.model_id, "quality": header.quality},
        )

    # -- family hooks ----------------------------------------------------------------------
    def _analyse_image(self, pixels: np.ndarray, low: int, high: int):
        """Quality-independent analysis of the stored values (a family that needs more than
        float32 0..1 precision at its top qualities overrides this)."""
        return self._analyse(normalized(pixels, low, high))

    def _analyse(self, x01: np.ndarray):
        """Quality-independent analysis of pixels scaled to 0..1 (shared by every quality)."""
        raise NotImplementedError

    def _encode(self, state, height: int, width: int, quality: int) -> bytes:
        """The entropy-coded payload for one quality."""
        raise NotImplementedError

    def _decode(self, payload: bytes, height: int, width: int, quality: int) -> np.ndarray:
        """Pixels scaled to 0..1 (float), ``height`` x ``width``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, qualities={self.qualities[0]}..{self.qualities[-1]})"


def default_codec_class() -> type["Codec"]:
    """The class of the registry's default model, read from the registry alone (no weights
    loaded): for what depends only on the family, such as the quality range."""
    from radseal.codec.weights import read_registry

    try:
        reg = read_registry()
        family = reg["models"].get(reg["default"], {}).get("family")
    except (CodecError, AttributeError):
        return Codec
    if family == "seq":
        from radseal.codec.seq import SeqCodec

        return SeqCodec
    if family == "subband":
        from radseal.codec.subband import SubbandCodec

        return SubbandCodec
    return Codec


def normalized(pixels: np.ndarray, low: int, high: int) -> np.ndarray:
    """Stored values mapped to 0..1 by the image's own range (what every codec family codes)."""
    return (pixels.astype(np.float32) - low) / float(max(high - low, 1))


def stored(x: np.ndarray, low: int, high: int, dtype) -> np.ndarray:
    """Decoded 0..1 values back to stored values (rounded, clipped to [low, high]), in float64
    a block at a time so that the temporaries stay small whatever the image size."""
    x = np.asarray(x)
    span = float(max(high - low, 1))
    out = np.empty(x.shape, dtype=dtype)
    src, dst = x.reshape(-1), out.reshape(-1)
    for i in range(0, src.size, 1 << 18):
        v = src[i : i + (1 << 18)].astype(np.float64)
        v *= span
        v += low
        np.rint(v, out=v)
        np.clip(v, low, high, out=v)
        dst[i : i + (1 << 18)] = v
    return out
