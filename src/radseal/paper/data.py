"""The chest X-ray set at the paper's 200x200 input size, cached.

Decoding 386 JPEGs of up to 2916 px takes a while on a small CPU, so the
fixed-size arrays are cached in ``~/.cache/radseal`` (or $RADSEAL_CACHE),
keyed by the file list, their sizes and modification times.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from radseal.io.dataset import list_samples, load_fixed, recorded_path
from radseal.io.files import atomic_write
from radseal.paper.autoencoder import INPUT_SIZE


def _cache_dir() -> Path:
    d = Path(os.environ.get("RADSEAL_CACHE", Path.home() / ".cache" / "radseal"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_split(data_dir: str | Path, split: str, size: int = INPUT_SIZE, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) float32 in [0, 1] and labels (0 NORMAL, 1 PNEUMONIA) of one split."""
    samples = list_samples(data_dir, split)
    key = hashlib.sha256()
    for s in samples:
        st = s.path.stat()
        key.update(f"{s.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{s.label}\n".encode())
    cache = _cache_dir() / f"paper_{split}_{size}_{key.hexdigest()[:16]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["x"], z["y"]
    x, y = load_fixed(samples, size, progress=progress)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    atomic_write(cache, buf.getvalue())
    return x, y


def holdout_split(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train_idx, val_idx): ``fraction`` of each class held out for validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = int(round(len(idx) * fraction))
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` samples with the class proportions of ``y`` (all if n >= len(y))."""
    if n >= len(y):
        return np.arange(len(y))
    keep, _ = holdout_split(y, 1 - n / len(y), seed)
    return keep


def data_label(data_arg: str | None) -> str:
    """How a run records its data folder: as the user gave it, never as this machine's absolute path.

    ``--data`` as given; else ``$RADSEAL_DATA`` as set; else the default ``../shared/data/cxr``
    (which ``resolve_data_dir`` looks up beside the checkout).
    """
    if data_arg:
        return recorded_path(data_arg) if os.path.isabs(data_arg) else data_arg
    return os.environ.get("RADSEAL_DATA") or "../shared/data/cxr"
