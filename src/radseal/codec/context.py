"""Integer context features of the wavelet codec's entropy model.

Every quantity here is computed from already-decoded integer symbols with
integer numpy operations only (sums, slicing, comparisons), so the encoder
and the decoder derive bit-identical table indices on any machine, whatever
the float behaviour of the transform.

Coding order (the decoder's): the low-pass band, then per level from the
coarsest, the bands ``hl``, ``lh``, ``hh``; each band in four phases, one
per 2x2 sub-lattice (``PHASES``), so that later phases see decoded
neighbours on every side. A coefficient's context is

* its parent (same orientation, next coarser level): magnitude and 3x3
  neighbourhood sum at the co-located position;
* its decoded siblings at the same level (``lh`` sees ``hl``; ``hh`` sees
  both): co-located magnitude and 3x3 neighbourhood sum;
* the decoded neighbours in its own band, split into vertical (N+S),
  horizontal (W+E) and diagonal sums, so that a model can learn that the
  ``hl`` band runs along columns and ``lh`` along rows;
* the quality level (coarse steps make every magnitude smaller);
* the local brightness, read from the decoded low-pass band (X-ray noise
  grows with the signal, and clipped black or white regions carry none);
* one combined activity, a fixed weighted sum of all the decoded magnitudes
  above (an additive model over separate buckets multiplies evidence; the
  scale of a wavelet coefficient is closer to a sum of its neighbours').

Each feature is bucketed on a fixed integer grid; the learned model adds one
integer per (band class, feature, bucket), and the sum picks the table.
"""

from __future__ import annotations

import numpy as np

#: Bucket edges for magnitudes and magnitude sums (about three per octave).
BUCKET_EDGES = np.array(
    [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768,
     1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384, 32768, 65536],
    dtype=np.int64,
)
NUM_BUCKETS = int(BUCKET_EDGES.size)
FEATURES = ("parent", "parent3", "sibling", "sibling3", "vertical", "horizontal", "diagonal", "quality", "intensity",
            "activity")
NUM_FEATURES = len(FEATURES)
#: The 2x2 sub-lattices (row parity, column parity) in coding order.
PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))


_LUT_SIZE = int(BUCKET_EDGES[-1]) + 1
_BUCKET_LUT = (np.searchsorted(BUCKET_EDGES, np.arange(_LUT_SIZE), side="right") - 1).astype(np.int32)


def bucket(x: np.ndarray) -> np.ndarray:
    """Bucket index of each non-negative integer (a table lookup; 5x faster than a search)."""
    return np.take(_BUCKET_LUT, x, mode="clip")  # clip: magnitudes past the table share its last bucket


def box3(a: np.ndarray) -> np.ndarray:
    """3x3 neighbourhood sums (zero outside the band)."""
    p = np.pad(a, 1)
    s = p[:-2] + p[1:-1] + p[2:]
    return s[:, :-2] + s[:, 1:-1] + s[:, 2:]


def fit(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or zero-pad ``a`` to ``shape`` (related bands differ by at most one row or column)."""
    if a.shape == shape:
        return a
    out = np.zeros(shape, dtype=a.dtype)
    h, w = min(shape[0], a.shape[0]), min(shape[1], a.shape[1])
    out[:h, :w] = a[:h, :w]
    return out


def phase_shape(shape: tuple[int, int], phase: tuple[int, int]) -> tuple[int, int]:
    return (shape[0] - phase[0] + 1) // 2, (shape[1] - phase[1] + 1) // 2


def band_context(parent_abs: np.ndarray | None, siblings_abs: list[np.ndarray], shape: tuple[int, int],
                 intensity: np.ndarray) -> dict:
    """The phase-independent features of a band, bucketed once: parent (on the parent's grid),
    siblings and brightness bucket (on the band's grid)."""
    out: dict[str, np.ndarray | None] = {"parent": None, "parent3": None, "sibling": None, "sibling3": None,
                                         "intensity": intensity, "parent3_sum": None, "sibling3_sum": None}
    if parent_abs is not None and parent_abs.size:
        p3 = box3(parent_abs)
        out["parent"] = bucket(parent_abs)
        out["parent3"] = bucket(p3)
        out["parent3_sum"] = p3
    if siblings_abs:
        s = sum(fit(x, shape) for x in siblings_abs)
        s3 = box3(s)
        out["sibling"] = bucket(s)
        out["sibling3"] = bucket(s3)
        out["sibling3_sum"] = s3
    return out


def phase_features(decoded_abs: np.ndarray, static: dict, quality_bucket: int, phase: tuple[int, int]) -> np.ndarray:
    """(NUM_FEATURES, h, w) bucket indices for the positions of one phase of a band.

    ``decoded_abs`` holds the band's magnitudes where already decoded and zero elsewhere;
    ``static`` comes from :func:`band_context`.
    """
    shape = decoded_abs.shape
    a, b = phase
    hp, wp = phase_shape(shape, phase)
    f = np.zeros((NUM_FEATURES, hp, wp), dtype=np.int32)
    if hp == 0 or wp == 0:
        return f
    if static["parent"] is not None:
        # Position (a + 2r, b + 2c) has its parent at (r, c).
        f[0] = fit(static["parent"], (hp, wp))
        f[1] = fit(static["parent3"], (hp, wp))
    if static["sibling"] is not None:
        f[2] = static["sibling"][a::2, b::2]
        f[3] = static["sibling3"][a::2, b::2]
    p = np.zeros((shape[0] + 2, shape[1] + 2), dtype=decoded_abs.dtype)
    p[1:-1, 1:-1] = decoded_abs

    def at(di: int, dj: int) -> np.ndarray:
        return p[1 + a + di :: 2, 1 + b + dj :: 2][:hp, :wp]

    vertical = at(-1, 0) + at(1, 0)
    horizontal = at(0, -1) + at(0, 1)
    diagonal = at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1)
    f[4] = bucket(vertical)
    f[5] = bucket(horizontal)
    f[6] = bucket(diagonal)
    f[7] = quality_bucket
    f[8] = static["intensity"][a::2, b::2]
    activity = 2 * (vertical + horizontal) + diagonal
    if static["parent3_sum"] is not None:
        activity = activity + fit(static["parent3_sum"], (hp, wp))
    if static["sibling3_sum"] is not None:
        activity = activity + static["sibling3_sum"][a::2, b::2]
    f[9] = bucket(activity)
    return f
