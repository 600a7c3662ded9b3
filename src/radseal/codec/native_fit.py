"""``radseal fit-codec --native``: learn the native-depth coder's initial probabilities.

The engine's binary models adapt while an image is coded; what is learned is
where they start. Each training image is coded at every max error in
``MAX_ERRORS``; each binary model's final probability is averaged over those
runs, weighted by how often the model was used (capped, so that one large
image does not dominate), and rounded to the engine's 16-bit probabilities.
Models no run used start at 1/2.

Data: chest X-rays of DATA/train (8-bit) and the LEFT halves of RG1, RG3 and
of the radiographs in the native-depth folder (``../shared/data/native``);
right halves are held out for the benchmark and never coded here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from radseal.codec.native import MODEL_ID, NativeCodec, engine

MAX_ERRORS = (0, 1, 2, 4, 8, 16)
USE_CAP = 2000


def left_half(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[:, : pixels.shape[1] // 2])


def accumulate(images, max_errors=MAX_ERRORS, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(sum of weight x probability, sum of weights) per binary model over all runs."""
    eng = engine()
    num = np.zeros(eng.NBITS, np.float64)
    den = np.zeros(eng.NBITS, np.float64)
    for px in images:
        px = np.asarray(px, np.uint16)
        low, high = int(px.min()), int(px.max())
        if high == low:
            continue
        x = np.ascontiguousarray(px - low, dtype=np.uint16)
        h, w = x.shape
        for k in max_errors:
            _, probs, counts = eng.encode(x.tobytes(), h, w, high - low, k, b"", True)
            p = np.frombuffer(probs, "<u2").astype(np.float64)
            n = np.minimum(np.frombuffer(counts, "<u2").astype(np.float64), USE_CAP)
            num += n * p
            den += n
        if progress:
            progress()
    return num, den


def initial_table(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    eng = engine()
    p = np.where(den > 0, num / np.maximum(den, 1e-9), 32768.0)
    return np.clip(np.rint(p), eng.PROB_MIN, eng.PROB_MAX).astype(np.uint16)


def fit_native(data=None, native_dir=None, out_dir=None, images: int = 20, seed: int = 0, progress: bool = True,
               model_id: str = MODEL_ID) -> dict:
    from radseal.codec.errors import CodecError
    from radseal.codec.weights import register_model, weights_dir
    from radseal.io import read_image
    from radseal.io.dataset import list_samples, resolve_data_dir
    from radseal.io.samples import sample_path

    if images < 0:
        raise CodecError(f"--images must be at least 0, got {images}")
    folder = Path(out_dir) if out_dir else weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CodecError(f"{folder}: cannot create the weights folder ({exc.strerror or exc})") from None
    root = resolve_data_dir(data)
    listed = list_samples(root, "train")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(listed), min(images, len(listed)), replace=False)) if listed else []
    paths = [listed[i].path for i in chosen]
    native = Path(native_dir) if native_dir else root.parent / "native"
    native_files = sorted(native.glob("*.dcm")) if native.is_dir() else []

    def sources():
        for p in paths:
            yield read_image(p).pixels
        for name in ("RG1", "RG3"):
            yield left_half(read_image(sample_path(name)).pixels)
        for f in native_files:
            yield left_half(read_image(f).pixels)  # right halves are held out for the benchmark

    total = len(paths) + 2 + len(native_files)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="coding training images", unit="image")
    started = time.time()
    num, den = accumulate(sources(), progress=(lambda: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    table = initial_table(num, den)
    NativeCodec(table)  # validates against the engine
    elapsed = time.time() - started
    record = {
        "family": "native",
        "format_version": 1,
        "description": "native-depth lossless / max-error coder: normalized-LMS prediction (a blend of 8 fixed predictors at the borders), bias cancellation, "
                       "adaptive binary arithmetic coding; learned initial probabilities",
        "training": {
            "command": f"radseal fit-codec --native --images {images} --seed {seed}",
            "data": {
                "cxr_dir": root.name,
                "cxr_split": "train",
                "cxr_images": len(paths),
                "pydicom_data": "RG1, RG3: left half (columns < W/2) only",
                "native": f"{len(native_files)} images of {native.name}/: left half only; right halves held out",
            },
            "max_errors": list(MAX_ERRORS),
            "models_used": int((den > 0).sum()),
            "elapsed_s": round(elapsed, 1),
        },
    }
    state = {"config": np.frombuffer(b'{"family": "native", "engine_version": 1}', np.uint8),
             "tables.init": table}
    entry = {"family": "native", "format_version": 1, "engine_version": 1}
    return register_model(folder, model_id, state, record, entry, make_default=False)
