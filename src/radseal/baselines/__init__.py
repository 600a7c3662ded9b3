"""Standard codecs behind the learned codec's compress/decompress shape (via imagecodecs).

Each baseline is a :class:`Baseline` with ``compress(img, param) -> bytes`` and
``decompress(bytes) -> Image``, where ``param`` is the codec's own quality
knob and ``sweep`` lists values covering roughly 0.05 to 1.5 bpp on 8-bit
chest X-rays (and the matching range at higher bit depths). The bytes are the
standard codestream behind an 8-byte header (magic, codec, bit depth,
photometric, shift), so that the stream describes itself like the learned
codec's; reported sizes include the header.

Bit depths: JPEG 2000, JPEG XL, JPEG-LS take the native depth up to 16 bits.
libjpeg-turbo (12 bits at most) and AVIF (12 bits at most) receive images of
more than 12 bits shifted right to 12 bits and shift them back on decoding;
that loses the three low bits of a 15-bit image (a PSNR ceiling of about
83 dB at peak 2^15-1, far above any lossy setting measured). AVIF is fed the
grey image as three equal RGB planes because imagecodecs' monochrome AVIF
path ignores the quality setting (it always codes losslessly); the constant
chroma planes cost next to nothing.
"""

from radseal.baselines.codecs import BASELINES, Baseline, BaselineError, get_baseline

__all__ = ["BASELINES", "Baseline", "BaselineError", "get_baseline"]
