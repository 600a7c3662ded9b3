"""Lossless and guaranteed-maximum-error coding at the image's stored depth (``rsn1``).

``codec.compress(img, max_error=k)``: k = 0 decodes to exactly the stored
values; k >= 1 guarantees ``max |decoded - original| <= k`` on every pixel,
by construction: each pixel's prediction residual is quantized with step
2k + 1 against the *reconstructed* causal neighbours (as JPEG-LS NEAR does),
so the decoder forms the same prediction and the error of every pixel is the
quantization error of its own residual, at most k.

The pixel loop is the compiled engine ``radseal.codec._engine`` (C; see
``csrc/rsengine.c``): an adaptive linear predictor (normalized LMS with
integer weights) on the causal 5 x 3 window (at the image borders, a blend of
eight fixed predictors weighted by their recent local errors), bias
cancellation per texture/activity context, and
adaptive binary arithmetic coding of the residual under contexts of
quantized local activity, starting from probabilities learned by
``radseal fit-codec --native`` (:mod:`radseal.codec.native_fit`). A
pure-Python reference of the prediction and context rule is in
:mod:`radseal.codec.native_reference`.

Payload (inside the usual ``RSLC`` container, whose ``quality`` field holds
k and whose ``low``/``high`` the image's range)::

    1 byte   flags: bit 0 = values are coded as indices into the set of used values;
             bit 1 = values (or, with bit 2, the representatives' indices) are coded
                     losslessly through the reversible 5/3 wavelet; never with bit 0;
             bit 2 = (k >= 1 only) every value was mapped to a representative within k, and the
                     indices of the representatives are coded losslessly
    [if bit 0] 4 bytes  number of used values n; 4 bytes length L; L bytes: the gaps
                        between used values (engine integer stream)
    [if bit 2] the same, for the representatives r_0 < r_1 < ...: the first gap is r_0,
               then r_i - r_(i-1) - 1
    4 bytes  CRC-32 of the decoded stored values (uint16, little-endian, row-major)
    [if bit 1 clear]  the pixel stream (engine)
    [if bit 1 set]    1 byte levels J; 4 bytes low-pass offset (int32); 4 bytes low-pass
                      maximum (0..65535); 4 bytes length L of the low-pass pixel stream;
                      L bytes: the low-pass band (pixel coder, lossless); the detail
                      bands (engine band coder), coarsest level first, HL LH HH each

For k >= 1 the encoder also tries a value grid (bit 2): the used values are
covered by as few representatives as possible (each a used value; every
used value within k of its own), each pixel is replaced by its
representative, and the representatives' indices are coded losslessly
(directly or through the 5/3 front end). The bound holds by construction,
as in the prediction-domain mode; the shorter stream is kept. On an image
whose stored values are sparse (a LUT-mapped detector output), a step of
2k + 1 in the prediction domain lands between the used values and saves
little, while the grid keeps the histogram packing's advantage.

Values are coded as ``stored - low`` (range 0..high-low). Histogram packing
(bit 0) is used for lossless streams of images that leave stored values
unused (a LUT-mapped or rescaled detector output): prediction then runs on
the indices, which is what makes such images cheap.

The 5/3 front end (bit 1; streams without it decode exactly as before) is
JPEG 2000's reversible integer wavelet (vertical lifting, then horizontal,
on each level; whole-sample symmetric extension). The lossless encoder codes
the image both ways and keeps the shorter stream. It wins where the stored
values are a decoded lossy JPEG 2000 image: the bit planes the lossy stream
dropped leave the detail coefficients on a lattice (on the 16-bit
slot-scanner chest 99% of them have |v| = 2 mod 4, the rest are 0), which the band coder's low-bit contexts learn;
a predictor in the pixel domain cannot see that lattice.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from radseal.codec import bitstream
from radseal.codec.api import Codec
from radseal.codec.errors import BitstreamError, CodecError, WeightsError
from radseal.image import Image

MODEL_ID = "rsn1-nlms-ctx"
FLAG_PACKED = 1
FLAG_WAVELET53 = 2
FLAG_VALUE_GRID = 4
WAVELET_LEVELS = 1  # levels of the 5/3 front end; a stream names its count, and only 1 is accepted for now
MAX_WAVELET_LEVELS = 1  # (more levels never won: the lattice is in the first level, see docs/codec.md)
MAX_ERROR_LIMIT = 65535


def engine():
    """The compiled engine; a clear error if the package was installed without building it."""
    try:
        from radseal.codec import _engine
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise CodecError(
            "radseal's compiled engine is missing (reinstall with 'pip install -e .' on a machine with a C compiler)"
        ) from exc
    return _engine


def _crc(values: np.ndarray) -> bytes:
    return struct.pack("<I", zlib.crc32(np.ascontiguousarray(values, dtype="<u2")) & 0xFFFFFFFF)


def _lift_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level of the reversible 5/3 along the last axis: (low, high); any integer dtype, exact (>> is floor)."""
    n = x.shape[-1]
    if n < 2:
        return x.copy(), x[..., :0].copy()
    ev, od = x[..., 0::2], x[..., 1::2]
    ne, no = ev.shape[-1], od.shape[-1]
    evr = ev[..., 1:no + 1] if ne > no else np.concatenate([ev[..., 1:], ev[..., -1:]], axis=-1)
    d = od - ((ev[..., :no] + evr) >> 1)
    dl = np.concatenate([d[..., :1], d[..., :ne - 1]], axis=-1)
    dr = d if ne == no else np.concatenate([d, d[..., -1:]], axis=-1)
    return ev + ((dl + dr + 2) >> 2), d


def _lift_inverse(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    ne, no = s.shape[-1], d.shape[-1]
    if no == 0:
        return s.copy()
    dl = np.concatenate([d[..., :1], d[..., :ne - 1]], axis=-1)
    dr = d if ne == no else np.concatenate([d, d[..., -1:]], axis=-1)
    ev = s - ((dl + dr + 2) >> 2)
    evr = ev[..., 1:no + 1] if ne > no else np.concatenate([ev[..., 1:], ev[..., -1:]], axis=-1)
    x = np.empty(s.shape[:-1] + (ne + no,), s.dtype)
    x[..., 0::2] = ev
    x[..., 1::2] = d + ((ev[..., :no] + evr) >> 1)
    return x


def wavelet53_forward(x: np.ndarray, levels: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(low-pass band, detail bands coarsest level first, HL LH HH per level) of an integer image of values
    below 2^16 (int32: every intermediate stays far inside its range)."""
    ll, bands = np.asarray(x, np.int32), []
    for _ in range(levels):
        lo, hi = (t.T for t in _lift_forward(ll.T))  # vertical
        ll, hl = _lift_forward(lo)
        lh, hh = _lift_forward(hi)
        bands = [hl, lh, hh] + bands
    return ll, bands


def wavelet53_shapes(h: int, w: int, levels: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Shapes of the bands wavelet53_forward makes from an h x w image (what the decoder allocates)."""
    shapes = []
    for _ in range(levels):
        hl_, hh_ = (h + 1) // 2, h // 2
        wl, wh = (w + 1) // 2, w // 2
        shapes = [(hl_, wh), (hh_, wl), (hh_, wh)] + shapes
        h, w = hl_, wl
    return (h, w), shapes


def wavelet53_inverse(ll: np.ndarray, bands: list[np.ndarray], levels: int) -> np.ndarray:
    """Inverse of wavelet53_forward; int32, for bands within +-2^26 and a low-pass band within +-2^22."""
    ll = np.asarray(ll, np.int32)
    for j in range(levels):
        hl, lh, hh = bands[3 * j:3 * j + 3]
        lo = _lift_inverse(ll, hl)
        hi = _lift_inverse(lh, hh)
        ll = _lift_inverse(lo.T, hi.T).T
    return ll


def _value_grid(used: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(representatives, index of each used value's representative): the fewest used values such that every
    used value lies within k of its representative (greedy interval cover, optimal on a line)."""
    reps, index = [], np.zeros(used.size, np.uint16)
    i, n = 0, used.size
    while i < n:
        r = int(np.searchsorted(used, used[i] + k, side="right")) - 1  # the largest used value <= used[i] + k
        j = int(np.searchsorted(used, used[r] + k, side="right"))  # everything up to used[r] + k maps to it
        index[i:j] = len(reps)
        reps.append(used[r])
        i = j
    return np.array(reps, np.uint16), index


def _int_table(n: int, gaps: np.ndarray) -> bytes:
    gaps = np.asarray(gaps, "<i4")
    stream = engine().code_ints(gaps.tobytes(), _gap_contexts(gaps.size), _gap_contexts(gaps.size), b"")
    return struct.pack("<II", n, len(stream)) + stream


def _gap_contexts(n: int) -> bytes:
    return bytes(4 * n)  # one context (0) for every gap and sign


class NativeCodec(Codec):
    """The native-depth predictive coder; one per set of learned initial tables."""

    family = "native"
    num_qualities = 1

    def __init__(self, init: np.ndarray | None, model_id: str = MODEL_ID, info: dict | None = None):
        super().__init__(model_id, info)
        eng = engine()
        if init is None:
            self._init = b""
        else:
            init = np.asarray(init)
            if init.shape != (eng.NBITS,) or init.min() < eng.PROB_MIN or init.max() > eng.PROB_MAX:
                raise WeightsError("native codec weights do not match the engine (initial table shape or range)")
            self._init = init.astype("<u2").tobytes()

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], model_id: str, info: dict | None = None) -> "NativeCodec":
        if "tables.init" not in state:
            raise WeightsError("native codec weights lack tables.init")
        return cls(state["tables.init"], model_id, info)

    # -- coding ----------------------------------------------------------------------------
    def compress(self, img: Image, quality: int | None = None, bpp: float | None = None,
                 max_error: int | None = None) -> bytes:
        if quality is not None or bpp is not None:
            raise CodecError("the native-depth coder takes max_error only (0 = lossless)")
        return self.compress_native(img, 0 if max_error is None else max_error)

    def compress_qualities(self, img: Image, qualities) -> dict[int, bytes]:
        raise CodecError("the native-depth coder has no quality levels; use max_error")

    def compress_native(self, img: Image, max_error: int) -> bytes:
        if not isinstance(img, Image):
            raise CodecError(f"compress expects a radseal Image, got {type(img).__name__}")
        if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) or not 0 <= max_error <= MAX_ERROR_LIMIT:
            raise CodecError(f"max_error must be an integer in 0..{MAX_ERROR_LIMIT}, got {max_error!r}")
        k = int(max_error)
        h, w = img.shape
        if h < 1 or w < 1 or h > bitstream.MAX_SIDE or w > bitstream.MAX_SIDE or h * w > bitstream.MAX_PIXELS:
            raise CodecError(f"image size {h}x{w} is outside what the codec supports")
        px = img.pixels
        low, high = int(px.min()), int(px.max())
        x = np.subtract(px, low, dtype=np.uint16)  # 0..high-low
        payload = self._encode_values(x, high - low, k)
        header = bitstream.Header(model_id=self.model_id, height=h, width=w, bits_stored=img.bits_stored,
                                  photometric=img.photometric, signed=bool(img.signed), quality=k, low=low, high=high)
        return bitstream.pack(header, payload)

    def _encode_values(self, x: np.ndarray, maxval: int, k: int, front_end: str = "best") -> bytes:
        """Payload of values 0..maxval: the shortest of the candidate codings. For k = 0: the values (or their
        indices among the used values) directly and through the 5/3 front end; front_end "direct" or
        "wavelet" restricts the choice (tests). For k >= 1: prediction-domain quantization, and the value
        grid's indices coded losslessly; front_end "prediction" or "grid" forces one (tests)."""
        eng = engine()
        h, w = x.shape
        if maxval == 0:
            return bytes([0]) + _crc(x)
        used = np.flatnonzero(np.bincount(x.ravel(), minlength=maxval + 1))
        if k > 0:
            pixels, rec = eng.encode(np.ascontiguousarray(x).tobytes(), h, w, maxval, k, self._init, False, True)
            best = bytes([0]) + _crc(np.frombuffer(rec, dtype="<u2").reshape(h, w)) + pixels
            if front_end == "prediction":
                return best
            reps, index = _value_grid(used, k)
            if int(np.abs(reps[index].astype(np.int64) - used).max()) > k:  # the bound, by construction
                raise CodecError("internal error: value grid exceeds the bound")
            lut = np.zeros(maxval + 1, np.uint16)
            lut[used] = index
            coded, recon = lut[x], reps[lut[x]]
            gaps = np.diff(np.concatenate([[-1], reps.astype(np.int64)])) - 1
            table = _int_table(reps.size, gaps)
            coded_max = int(reps.size - 1)
            candidates = [(FLAG_VALUE_GRID, b"")]
            if coded_max > 0:
                candidates = [(FLAG_VALUE_GRID, eng.encode(np.ascontiguousarray(coded).tobytes(), h, w, coded_max, 0,
                                                           self._init))]
                alt = self._encode_wavelet(coded, WAVELET_LEVELS)
                if alt is not None:
                    candidates.append((FLAG_VALUE_GRID | FLAG_WAVELET53, alt))
            for fl, pixels in candidates:
                payload = bytes([fl]) + table + _crc(recon) + pixels
                if len(payload) < len(best) or front_end == "grid":
                    best = payload
            return best
        # lossless: prediction on the values (on their indices among the used values when some are unused),
        # and the 5/3 front end on the values (not on the indices: that never won on the images measured,
        # and would cost encode time; a stream may not combine the two)
        flags, table, coded, coded_max = 0, b"", x, maxval
        if used.size < maxval + 1:
            lut = np.zeros(maxval + 1, np.uint16)
            lut[used] = np.arange(used.size, dtype=np.uint16)
            flags, table, coded, coded_max = FLAG_PACKED, _int_table(used.size, np.diff(used) - 1), lut[x], int(used.size - 1)
        best = None
        if front_end != "wavelet":
            pixels = eng.encode(np.ascontiguousarray(coded).tobytes(), h, w, coded_max, 0, self._init)
            best = bytes([flags]) + table + _crc(x) + pixels
        if front_end != "direct":
            alt = self._encode_wavelet(x, WAVELET_LEVELS)
            if alt is not None and (best is None or 1 + 4 + len(alt) < len(best)):
                best = bytes([FLAG_WAVELET53]) + _crc(x) + alt
        if best is None:
            raise CodecError("no front end can code this image")  # only a forced "wavelet" on a 16-bit overflow
        return best

    def _encode_wavelet(self, coded: np.ndarray, levels: int) -> bytes | None:
        """The lossless stream through the 5/3 front end, or None where the low-pass band leaves 16 bits."""
        eng = engine()
        ll, bands = wavelet53_forward(coded, levels)
        lo, top = int(ll.min()), int(ll.max())
        if top - lo > 65535 or not all(np.abs(b).max(initial=0) < (1 << 26) for b in bands):
            return None
        if top == lo:
            low = b""
        else:
            low = eng.encode(np.ascontiguousarray(ll - lo, dtype=np.uint16).tobytes(), ll.shape[0], ll.shape[1],
                             top - lo, 0, self._init)
        shapes = np.array([s for b in bands for s in b.shape], "<i4")
        values = np.concatenate([b.ravel() for b in bands]).astype("<i4") if bands else np.zeros(0, "<i4")
        detail = eng.band_encode(values.tobytes(), shapes.tobytes()) if shapes.size else b""
        return struct.pack("<BiII", levels, lo, top - lo, len(low)) + low + detail

    def _decode_wavelet(self, data: bytes, h: int, w: int, coded_max: int) -> np.ndarray:
        eng = engine()
        if len(data) < 13:
            raise BitstreamError("codec stream truncated (wavelet header)")
        levels, lo, top, length = struct.unpack_from("<BiII", data, 0)
        if not 1 <= levels <= MAX_WAVELET_LEVELS or top > 65535 or abs(lo) > (1 << 20) or len(data) < 13 + length:
            raise BitstreamError("codec stream has an invalid wavelet header")
        (lh_, lw_), shapes = wavelet53_shapes(h, w, levels)
        low, detail = data[13:13 + length], data[13 + length:]
        try:
            if top == 0:
                if low:
                    raise BitstreamError("codec stream has pixel data for a constant low-pass band")
                ll = np.zeros((lh_, lw_), np.int32)
            else:
                ll = np.frombuffer(eng.decode(low, lh_, lw_, top, 0, self._init), "<u2").reshape(lh_, lw_).astype(np.int32)
            flat = np.frombuffer(eng.band_decode(detail, np.array(shapes, "<i4").tobytes()), "<i4")
        except ValueError as exc:
            raise BitstreamError(f"codec stream damaged: {exc}") from None
        bands, pos = [], 0
        for bh, bw in shapes:
            bands.append(flat[pos:pos + bh * bw].reshape(bh, bw))
            pos += bh * bw
        x = wavelet53_inverse(ll + lo, bands, levels)
        if x.min(initial=0) < 0 or x.max(initial=0) > coded_max:
            raise BitstreamError("codec stream decodes to values outside the image's range (damaged or forged)")
        return x.astype(np.uint16)

    def _decode_values(self, pixels: bytes, h: int, w: int, maxval: int, k: int) -> np.ndarray:
        if maxval == 0:
            if pixels:
                raise BitstreamError("codec stream has pixel data for a constant image")
            return np.zeros((h, w), np.uint16)
        try:
            out = engine().decode(pixels, h, w, maxval, k, self._init)
        except ValueError as exc:
            raise BitstreamError(f"codec stream damaged: {exc}") from None
        return np.frombuffer(out, dtype="<u2").reshape(h, w)

    @staticmethod
    def _read_table(payload: bytes, pos: int, maxval: int) -> tuple[np.ndarray, int]:
        """A value-grid table (representatives within 0..maxval); returns (values, position after it)."""
        if maxval == 0 or len(payload) < pos + 8:
            raise BitstreamError("codec stream has an invalid value table")
        n, length = struct.unpack_from("<II", payload, pos)
        pos += 8
        if not 1 <= n <= maxval + 1 or len(payload) < pos + length:
            raise BitstreamError("codec stream has an invalid value table")
        try:
            gaps = np.frombuffer(engine().decode_ints(payload[pos:pos + length], _gap_contexts(n),
                                                      _gap_contexts(n), b""), dtype="<i4")
        except ValueError as exc:
            raise BitstreamError(f"codec stream has a damaged value table: {exc}") from None
        values = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if (gaps < 0).any() or values[-1] > maxval:
            raise BitstreamError("codec stream has an inconsistent value table")
        return values.astype(np.uint16), pos + length

    def decompress(self, data: bytes) -> Image:
        header, payload = bitstream.unpack(data)
        if header.model_id != self.model_id:
            return super().decompress(data)  # dispatch to the model that made the stream
        h, w, k = header.height, header.width, header.quality
        maxval = header.high - header.low
        if not payload:
            raise BitstreamError("codec stream has an empty payload")
        flags, pos = payload[0], 1
        if flags & ~(FLAG_PACKED | FLAG_WAVELET53 | FLAG_VALUE_GRID):
            raise BitstreamError(f"codec stream has unknown flags {flags:#x}")
        grid = bool(flags & FLAG_VALUE_GRID)
        if grid and (k == 0 or flags & FLAG_PACKED):
            raise BitstreamError("codec stream has a value grid where none may be")
        if flags & FLAG_WAVELET53 and ((k != 0 and not grid) or maxval == 0 or flags & FLAG_PACKED):
            raise BitstreamError("codec stream uses the wavelet front end outside lossless coding")
        used = None
        if grid:
            used, pos = self._read_table(payload, pos, maxval)
        if flags & FLAG_PACKED:
            if k != 0 or maxval == 0 or len(payload) < pos + 8:
                raise BitstreamError("codec stream has an invalid value table")
            n, length = struct.unpack_from("<II", payload, pos)
            pos += 8
            if not 1 <= n <= maxval or len(payload) < pos + length:
                raise BitstreamError("codec stream has an invalid value table")
            try:
                gaps = np.frombuffer(engine().decode_ints(payload[pos:pos + length], _gap_contexts(n - 1),
                                                          _gap_contexts(n - 1), b""), dtype="<i4")
            except ValueError as exc:
                raise BitstreamError(f"codec stream has a damaged value table: {exc}") from None
            pos += length
            if (gaps < 0).any() or int(gaps.astype(np.int64).sum()) + n - 1 != maxval:
                raise BitstreamError("codec stream has an inconsistent value table")
            used = np.concatenate([[0], np.cumsum(gaps.astype(np.int64) + 1)]).astype(np.uint16)
        if len(payload) < pos + 4:
            raise BitstreamError("codec stream truncated")
        crc, pos = payload[pos:pos + 4], pos + 4
        coded_max = maxval if used is None else int(used.size - 1)
        if flags & FLAG_WAVELET53:
            x = self._decode_wavelet(payload[pos:], h, w, coded_max)
        else:
            x = self._decode_values(payload[pos:], h, w, coded_max, 0 if grid else k)
        if used is not None:
            x = used[x]
        if _crc(x) != crc:
            raise BitstreamError("codec stream decodes to values that fail their checksum (damaged or forged)")
        dtype = np.uint8 if header.bits_stored <= 8 else np.uint16
        values = np.add(x, header.low, dtype=np.uint16)  # header.high < 2**bits_stored: no overflow
        return Image(
            pixels=values if dtype == np.uint16 else values.astype(dtype),
            bits_stored=header.bits_stored,
            photometric=header.photometric,
            signed=header.signed,
            metadata={"codec": self.model_id, "max_error": k, "mode": describe_mode(k)},
        )


def describe_mode(max_error: int) -> str:
    return "lossless" if max_error == 0 else f"near-lossless, max error {max_error}"


_DEFAULT: NativeCodec | None = None


def default_native() -> NativeCodec:
    """The installed native-depth coder (its learned tables if registered, else flat tables)."""
    global _DEFAULT
    if _DEFAULT is None:
        from radseal.codec.errors import UnknownModelError

        try:
            _DEFAULT = Codec.pretrained(MODEL_ID)
        except UnknownModelError:
            _DEFAULT = NativeCodec(None)
    return _DEFAULT
