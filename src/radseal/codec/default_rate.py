"""The default rate: per image, at least the fidelity of JPEG 2000 at 30:1.

The Canadian Association of Radiologists' guideline accepts JPEG 2000 at up to
30:1 for CR/DX chest radiographs. ``Codec.compress(img)`` without ``quality``
or ``bpp`` therefore aims at the *fidelity* of that reference, not at its rate:

1. Encode the image with OpenJPEG at 30:1 of its stored size, decode it and
   take its squared error (the reference). "30:1 of the stored size" means
   ``bits allocated / 30`` bits per pixel: 8/30 for images of up to 8 bits,
   16/30 for 9- to 16-bit images, which DICOM stores in 16-bit words; that is
   how a PACS counts the ratio (file bytes against compressed bytes). OpenJPEG
   is a core dependency (pylibjpeg-openjpeg, which decodes JPEG 2000 DICOM),
   so an edge device has it.
2. Take the lowest radseal quality whose reconstruction has no larger squared
   error, i.e. a PSNR at least the reference's (both against the same peak);
   then the quality one below without the coder's band weights, if that also
   meets the reference and is smaller (it lies between two rungs).
3. If even the highest quality falls short (images of 10 to 16 bits, where
   JPEG 2000 at 16/30 bpp is close to lossless), take the native-depth coder
   with the largest maximum error that still meets the reference (``max_error
   = 0``, lossless, always does).

Why not simply ``bpp = bits allocated / 30``: the quality ladder is coarse
(neighbouring qualities differ by up to 2x in rate at 30:1), so the highest
quality that fits 30:1 often lands far below it, and then below JPEG 2000's
PSNR (measured in docs/results/evaluate/at30.md). Step 2 checks the result
instead of assuming it; every choice is verified by decoding.
"""

from __future__ import annotations

import numpy as np

from radseal.codec.errors import CodecError

#: The reference: JPEG 2000 at this ratio of the stored size.
REFERENCE_RATIO = 30.0


def bits_allocated(bits_stored: int) -> int:
    """The bits a stored pixel occupies: 8 up to 8 bits stored, else 16 (DICOM's Bits Allocated)."""
    return 8 if bits_stored <= 8 else 16


def reference_bpp(bits_stored: int, ratio: float = REFERENCE_RATIO) -> float:
    """Bits per pixel of ``ratio``:1 of the stored size."""
    return bits_allocated(bits_stored) / ratio


def jpeg2000_at_ratio(pixels: np.ndarray, bits_stored: int, ratio: float = REFERENCE_RATIO) -> tuple[bytes, np.ndarray]:
    """(codestream, decoded pixels) of OpenJPEG (9/7 wavelet, one layer) at ``ratio``:1 of the stored size."""
    import openjpeg

    # OpenJPEG counts its ratio against bits_stored per pixel; scale it to bits allocated.
    r = ratio * bits_stored / bits_allocated(bits_stored)
    try:
        data = openjpeg.encode(np.ascontiguousarray(pixels), bits_stored=bits_stored, compression_ratios=[max(r, 1.0)])
        out = openjpeg.decode(data)
    except Exception as exc:  # OpenJPEG refuses some shapes (e.g. too small for its 6 resolutions)
        raise CodecError(f"JPEG 2000 reference failed ({type(exc).__name__}: {exc})") from None
    return data, np.asarray(out).reshape(pixels.shape)


def squared_error(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.dot(d.ravel(), d.ravel()))


def compress_default(codec, img, ratio: float = REFERENCE_RATIO) -> bytes:
    """The default-rate stream of ``img`` (the rule in the module doc); every candidate is decoded and checked."""
    encode = codec._encoder(img)  # the codec's own checks (type, size) come first
    ref = img.pixels
    qs = codec.qualities
    if int(ref.min()) == int(ref.max()):
        return encode(qs[-1])  # a constant image: exact at any quality
    try:
        _, j2k = jpeg2000_at_ratio(ref, img.bits_stored, ratio)
        target = squared_error(ref, j2k)
    except CodecError:
        # Too small for OpenJPEG: such an image costs little at any setting; code it at the top quality.
        target = None
    cache: dict[int, tuple[bytes, float]] = {}

    def at(q: int) -> tuple[bytes, float]:
        if q not in cache:
            data = encode(q)
            cache[q] = (data, squared_error(ref, codec.decompress(data).pixels))
        return cache[q]

    if target is None:
        return at(qs[-1])[0]

    def meets(i: int) -> bool:
        return at(qs[i])[1] <= target

    # Galloping search from the old fixed default, then bisection: the lowest quality that meets
    # the target (squared error falls with quality). High qualities are the costly encodes, so
    # the search only climbs as far as it must.
    last = len(qs) - 1
    start = qs.index(codec.default_quality) if codec.default_quality in qs else 0
    step = 1
    if meets(start):
        lo, hi = 0, start
        while hi > 0:
            j = max(hi - step, 0)
            if not meets(j):
                lo = j + 1
                break
            hi, step = j, step * 2
    else:
        lo, i = start + 1, start
        while True:
            if i == last:  # not even the top quality meets it
                return _native_meeting(codec, img, target) or at(qs[last])[0]
            j = min(i + step, last)
            if meets(j):
                hi = j
                break
            lo, i, step = j + 1, j, step * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    best = at(qs[hi])[0]
    return _between_rungs(codec, img, qs, hi, best, target) or best


def _between_rungs(codec, img, qs, hi: int, best: bytes, target: float) -> bytes | None:
    """The quality below ``qs[hi]`` without the coder's band weights, if that stream meets the
    target and is smaller: the weights (a per-stream field) trade PSNR for MS-SSIM, so dropping
    them lands between two rungs of the ladder, which is coarse at 30:1 (up to 1.4x in rate per
    rung)."""
    import copy

    if hi == 0 or getattr(codec, "band_weights", None) is None:
        return None
    plain = copy.copy(codec)
    plain.band_weights = None
    data = plain.compress(img, quality=qs[hi - 1])
    if len(data) < len(best) and squared_error(img.pixels, codec.decompress(data).pixels) <= target:
        return data
    return None


def _native_meeting(codec, img, target: float) -> bytes | None:
    """The native-depth stream with the largest max error whose squared error is at most ``target``."""
    from radseal.codec.native import default_native

    native = default_native()
    ref = img.pixels
    # A quantizer of step 2k+1 leaves a mean squared error near k(k+1)/3: k beyond twice
    # sqrt(3 * mse) cannot meet the target, which keeps the search to a few encodes.
    per_pixel = target / max(ref.size, 1)
    lo, hi = 0, min(int(ref.max()) - int(ref.min()), 2 * int(np.sqrt(3.0 * per_pixel)) + 2)
    found = None
    while lo <= hi:
        k = (lo + hi) // 2
        data = native.compress_native(img, k)
        if squared_error(ref, codec.decompress(data).pixels) <= target:
            found, lo = data, k + 1
        else:
            hi = k - 1
    return found
