"""Learn the wavelet codec's entropy model and reconstruction from training images.

Three things are learned, in order, from the same samples:

1. the context model: one weight per (band class, feature, bucket) plus a
   bias per class, fitted by maximum likelihood of the dead-zone-quantized
   symbols under a Laplace density whose log-scale is the model's sum
   (PyTorch, Adam); the weights are then rounded to integers;
2. the probability tables: for each table index the integer model now
   picks, the weighted histogram of the symbols it receives, smoothed with
   the Laplace prior of that index's scale;
3. the reconstruction points: per table index, the mean position of the
   coefficients inside their quantization bin (for magnitude 1 and >= 2).

Samples are drawn from every coding unit (band x phase) of every image at
several quality levels, at most ``per_unit`` per unit, each weighted by the
share of the unit it stands for, so that large fine bands are not
over-represented in the tables.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radseal.codec import context, subband
from radseal.codec.api import normalized
from radseal.codec.entropy import quantize_pmf
from radseal.extras import require

# The fit runs on PyTorch: say so at import, before minutes of sample collection.
require("torch", "train", "radseal fit-codec")


@dataclass
class Samples:
    cls: list = field(default_factory=list)
    feats: list = field(default_factory=list)
    mag: list = field(default_factory=list)
    pos: list = field(default_factory=list)  # |c| / step: position inside the quantizer's range
    weight: list = field(default_factory=list)

    def arrays(self):
        return (np.concatenate(self.cls), np.concatenate(self.feats, axis=0), np.concatenate(self.mag),
                np.concatenate(self.pos), np.concatenate(self.weight))


class _Recorder(subband.SubbandModel):
    """Walks like the coder but records features instead of choosing tables."""

    def __init__(self, steps: np.ndarray, rounding: float):
        self.steps = np.asarray(steps, dtype=np.float64)
        self.rounding = float(rounding)
        from radseal.codec import wavelet

        self._ll_norm, self._detail_norms = wavelet.synthesis_norms(subband.LEVELS)
        self.intensity_edges = subband.intensity_edges(self.steps)
        self._last = None

    def table_index(self, features, cls):
        self._last = (features, cls)
        return np.zeros(features.shape[1:], dtype=np.int64)


def collect(images, steps: np.ndarray, rounding: float, qualities_per_image: int, per_unit: int, seed: int,
            progress=None) -> Samples:
    """Samples from ``images`` (iterables of float arrays scaled 0..1)."""
    rng = np.random.default_rng(seed)
    rec = _Recorder(steps, rounding)
    out = Samples()
    for n, x01 in enumerate(images):
        coeffs = rec.analyse(x01)
        qualities = rng.choice(np.arange(1, subband.NUM_QUALITIES + 1), qualities_per_image, replace=False)
        for quality in qualities:
            q = rec.quantize(coeffs, int(quality))
            _, band_steps = rec.band_steps(int(quality), len(coeffs.details))

            def code_unit(idx, i, o, phase, q=q, band_steps=band_steps):
                feats, cls = rec._last
                values = q.details[i][o][phase[0] :: 2, phase[1] :: 2]
                raw = coeffs.details[i][o][phase[0] :: 2, phase[1] :: 2]
                size = values.size
                take = rng.choice(size, min(size, per_unit), replace=False)
                out.cls.append(np.full(take.size, cls, dtype=np.int16))
                out.feats.append(feats.reshape(context.NUM_FEATURES, -1)[:, take].T.astype(np.int8))
                out.mag.append(np.abs(values.ravel()[take]).astype(np.int32))
                out.pos.append((np.abs(raw.ravel()[take]) / band_steps[i][o]).astype(np.float32))
                out.weight.append(np.full(take.size, size / take.size, dtype=np.float32))
                return values

            rec.walk(x01.shape[0], x01.shape[1], int(quality), q.ll, code_unit)
        if progress:
            progress(n + 1)
    return out


def _laplace_mag_pmf(sigma: float, rounding: float, half: int) -> np.ndarray:
    """P(|q| = m), m = 0..half (the last bin holds the tail), dead-zone quantizer, Laplace(0, sigma)."""
    m = np.arange(half + 1, dtype=np.float64)
    lo = np.maximum(m - rounding, 0.0)
    hi = m + 1.0 - rounding
    p = np.exp(-lo / sigma) - np.exp(-hi / sigma)
    p[-1] = math.exp(-lo[-1] / sigma)
    return np.maximum(p, 0.0)


def fit(samples: Samples, rounding: float, iterations: int = 300, lr: float = 0.05, threads: int = 2,
        log=print) -> dict[str, np.ndarray]:
    from radseal.extras import require

    torch = require("torch", "train", "radseal fit-codec")

    torch.set_num_threads(threads)
    cls, feats, mag, pos, weight = samples.arrays()
    log_ratio = math.log(subband.SIGMA_MAX / subband.SIGMA_MIN) / (subband.NUM_SCALES - 1)
    C = torch.from_numpy(cls.astype(np.int64))
    # One flat index per (sample, feature) into the weight table: gathering and summing is the
    # model (measured 7x faster on CPU than an embedding bag, backward pass included).
    per_class = context.NUM_FEATURES * context.NUM_BUCKETS
    flat = torch.from_numpy(cls.astype(np.int64)[:, None] * per_class + np.arange(context.NUM_FEATURES) * context.NUM_BUCKETS + feats.astype(np.int64))
    Q = torch.from_numpy(mag.astype(np.float32))
    Wt = torch.from_numpy(weight.astype(np.float64))
    Wt = (Wt / Wt.sum()).float()
    shape = (subband.NUM_CLASSES, context.NUM_FEATURES, context.NUM_BUCKETS)
    T = torch.zeros((subband.NUM_CLASSES * per_class, 1), dtype=torch.float32, requires_grad=True)
    bias = torch.full((subband.NUM_CLASSES,), -math.log(subband.SIGMA_MIN) / log_ratio, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([T, bias], lr=lr)
    r = rounding

    def loss():
        u = T.view(-1)[flat].sum(1) + bias[C]
        b = torch.exp(math.log(subband.SIGMA_MIN) + u * log_ratio).clamp(subband.SIGMA_MIN, subband.SIGMA_MAX)
        p0 = -torch.expm1(-(1 - r) / b)
        pk = 0.5 * (torch.exp(-(Q - r) / b) - torch.exp(-(Q + 1 - r) / b))
        p = torch.where(Q == 0, p0, pk).clamp_min(1e-30)
        return -(Wt * torch.log2(p)).sum()

    for it in range(iterations):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        if it % 25 == 0 or it == iterations - 1:
            log(f"context model: iteration {it + 1}/{iterations}, {value.item():.4f} bits per coefficient")
    scale = 1 << subband.INDEX_FRAC_BITS
    weights = np.rint(T.detach().numpy().reshape(shape) * scale).astype(np.int32)
    bias_int = np.rint(bias.detach().numpy() * scale).astype(np.int32)
    return {"ctx.weights": weights, "ctx.bias": bias_int}


def build_tables(samples: Samples, ctx: dict[str, np.ndarray], rounding: float, prior_weight: float = 200.0) -> dict[str, np.ndarray]:
    cls, feats, mag, pos, weight = samples.arrays()
    flat = ctx["ctx.weights"].astype(np.int64).reshape(subband.NUM_CLASSES, -1)
    offsets = np.arange(context.NUM_FEATURES) * context.NUM_BUCKETS
    s = flat[cls.astype(np.int64)[:, None], feats.astype(np.int64) + offsets[None, :]].sum(1) + ctx["ctx.bias"].astype(np.int64)[cls]
    half_frac = 1 << (subband.INDEX_FRAC_BITS - 1)
    idx = np.clip((s + half_frac) >> subband.INDEX_FRAC_BITS, 0, subband.NUM_SCALES - 1)
    sigmas = subband.sigma_table()
    halves = subband.half_widths()
    counts = np.zeros((subband.NUM_SCALES, 2 * subband.MAX_HALF + 1), dtype=np.int32)
    centroids = np.zeros((subband.NUM_SCALES, 2), dtype=np.float32)
    w_all = weight.astype(np.float64)
    for k in range(subband.NUM_SCALES):
        sel = idx == k
        h = int(halves[k])
        m = np.minimum(mag[sel], h)
        w = w_all[sel]
        hist = np.bincount(m, weights=w, minlength=h + 1)[: h + 1]
        n_eff = float(len(m))
        hist = hist / hist.sum() if hist.sum() > 0 else hist
        prior = _laplace_mag_pmf(float(sigmas[k]), rounding, h)
        prior /= prior.sum()
        mags = (n_eff * hist + prior_weight * prior) / (n_eff + prior_weight)
        signed = np.concatenate([mags[:0:-1] / 2, mags[:1], mags[1:] / 2])
        counts[k, : 2 * h + 1] = quantize_pmf(signed, subband.PRECISION)
        for j, pick in enumerate((mag[sel] == 1, mag[sel] >= 2)):
            # Mean position inside the bin, pulled towards the middle when a table saw few samples.
            offset = pos[sel][pick] - (mag[sel][pick] - rounding)
            ww = w[pick]
            pseudo = 20.0 * (float(ww.mean()) if ww.size else 1.0)
            centroids[k, j] = float((np.sum(offset * ww) + 0.5 * pseudo) / (np.sum(ww) + pseudo))
    return {"tables.counts": counts, "tables.half": halves.astype(np.int32), "recon.centroids": centroids}


def make_state(ctx, tables, steps, rounding, record: dict) -> dict[str, np.ndarray]:
    state = dict(ctx)
    state.update(tables)
    state["quant.steps"] = np.asarray(steps, dtype=np.float64)
    state["quant.rounding"] = np.array(rounding, dtype=np.float64)
    state["ctx.intensity_edges"] = subband.intensity_edges(steps)
    config = {"family": "subband", "levels": subband.LEVELS, "num_scales": subband.NUM_SCALES, **record}
    state["config"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    return state


#: The id of the model the current recipe produces; bump it when the format or features change.
CURRENT_MODEL_ID = "rsc2-cdf97-ctx"
STEP_MAX = 50.0  # quality 1, in 8-bit grey levels
STEP_MIN = 2.0  # quality 16
ROUNDING = 0.4  # dead-zone quantizer: q = sign(c) * floor(|c| / step + ROUNDING)


def _normalized(pixels: np.ndarray) -> np.ndarray:
    """As the codec sees an image: its own range mapped to 0..1."""
    return normalized(pixels, int(pixels.min()), int(pixels.max()))


def train_subband(data=None, out_dir=None, model_id: str = CURRENT_MODEL_ID, images: int = 60,
                  qualities_per_image: int = 6, per_unit: int = 600, iterations: int = 250, seed: int = 0,
                  threads: int = 2, rounding: float = ROUNDING, progress: bool = True, log=print) -> dict:
    """Fit the wavelet codec on ``images`` chest X-rays of DATA/train plus the left halves of RG1
    and RG3, and register it in ``out_dir`` (default: the package's weights) as the default model."""
    from radseal.codec.errors import CodecError
    from radseal.codec.weights import register_model, weights_dir
    from radseal.io import read_image
    from radseal.io.dataset import list_samples, resolve_data_dir
    from radseal.io.samples import sample_path

    for name, value in (("images", images), ("qualities-per-image", qualities_per_image), ("per-unit", per_unit),
                        ("iterations", iterations), ("threads", threads)):
        if value < 1:
            raise CodecError(f"--{name} must be at least 1, got {value}")
    if not 0.0 < rounding <= 0.5:
        raise CodecError(f"--rounding must be in (0, 0.5], got {rounding}")
    if qualities_per_image > subband.NUM_QUALITIES:
        raise CodecError(f"--qualities-per-image must be at most {subband.NUM_QUALITIES}")
    folder = Path(out_dir) if out_dir else weights_dir()
    try:  # fail before minutes of fitting, not after
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CodecError(f"{folder}: cannot create the weights folder ({exc.strerror or exc})") from None
    root = resolve_data_dir(data)
    listed = list_samples(root, "train")
    if not listed:
        raise CodecError(f"{root}: no training images under train/")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(listed), min(images, len(listed)), replace=False))
    paths = [listed[i].path for i in chosen]

    def sources():
        for p in paths:
            yield _normalized(read_image(p).pixels)
        for name in ("RG1", "RG3"):
            px = read_image(sample_path(name)).pixels
            yield _normalized(px[:, : px.shape[1] // 2])  # right halves are held out for the benchmark

    steps = subband.quality_steps(STEP_MAX, STEP_MIN)
    total = len(paths) + 2
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="collecting contexts", unit="image")
    started = time.time()
    samples = collect(sources(), steps, rounding, qualities_per_image, per_unit, seed,
                      progress=(lambda n: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    collected = time.time() - started
    ctx = fit(samples, rounding, iterations=iterations, threads=threads, log=log)
    tables = build_tables(samples, ctx, rounding)
    elapsed = time.time() - started
    n_samples = int(sum(len(c) for c in samples.cls))
    command = (f"radseal fit-codec --images {images} --qualities-per-image {qualities_per_image} "
               f"--per-unit {per_unit} --iterations {iterations} --rounding {rounding} --seed {seed}")
    record = {
        "family": "subband",
        "format_version": 1,
        "description": "CDF 9/7 wavelet (6 levels), dead-zone quantizer, learned integer context model, learned tables and reconstruction points, ANS",
        "training": {
            "command": command,
            "data": {
                "cxr_dir": root.name,
                "cxr_split": "train",
                "cxr_images": len(paths),
                "pydicom_data": "RG1, RG3: left half (columns < W/2) only; right halves held out",
            },
            "samples": n_samples,
            "iterations": iterations,
            "collect_s": round(collected, 1),
            "elapsed_s": round(elapsed, 1),
            "threads": threads,
        },
    }
    state = make_state(ctx, tables, steps, rounding, {"model_id": model_id})
    entry = {"family": "subband", "format_version": 1, "training_samples": n_samples}
    return register_model(folder, model_id, state, record, entry, make_default=True)
