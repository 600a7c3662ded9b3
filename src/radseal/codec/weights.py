"""Shipped weights: the registry of model ids and the weights file format.

A model is one ``.npz`` file (numpy, loaded with ``allow_pickle=False``, so a
weights file can never run code) holding

* ``float.<name>``: the float transforms ``g_a``, ``g_s``, ``h_a`` and the
  gain vectors, in float16 (a quarter of the size of float32; the model runs
  in float32 after loading);
* ``hs_int.<i>.weight|bias``: the integer hyper-synthesis;
* ``tables.y_counts``, ``tables.y_half``, ``tables.z_counts``,
  ``tables.thresholds``: the integer entropy-coding tables;
* ``config``: the architecture as UTF-8 JSON bytes.

``registry.json`` beside the files names each model id, its file, format
version and SHA-256; loading refuses a file whose hash does not match.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from radseal.codec.errors import UnknownModelError, WeightsError

REGISTRY_NAME = "registry.json"


def weights_dir() -> Path:
    """The package's shipped weights folder."""
    return Path(str(resources.files("radseal") / "weights" / "codec"))


def read_registry(folder: Path | None = None) -> dict:
    folder = folder or weights_dir()
    path = folder / REGISTRY_NAME
    if not path.is_file():
        raise WeightsError(f"no codec weights registry at {path}; reinstall radseal or run 'radseal export-codec'")
    try:
        reg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable codec registry ({exc})") from None
    if "models" not in reg or "default" not in reg:
        raise WeightsError(f"{path}: codec registry lacks 'models' or 'default'")
    return reg


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(model_id: str | None, folder: Path | None = None) -> tuple[str, Path, dict]:
    """(model id, weights path, registry entry) for an id (None: the default)."""
    folder = folder or weights_dir()
    reg = read_registry(folder)
    mid = model_id or reg["default"]
    entry = reg["models"].get(mid)
    if entry is None:
        known = ", ".join(sorted(reg["models"])) or "none"
        raise UnknownModelError(f"unknown codec model id {mid!r} (installed: {known})")
    base = entry.get("weights_of")
    if base is not None:
        # A model that codes another model's weights differently (rsc3 runs rsc2's quantizer): the
        # file and its hash are that model's, so a refit of it is seen by both.
        target = reg["models"].get(base)
        if target is None or "weights_of" in target:
            raise WeightsError(f"model {mid!r} takes its weights from {base!r}, which is not installed as a weights file")
        entry = {**target, **{k: v for k, v in entry.items() if k != "weights_of"}, "weights_of": base}
    path = folder / entry["file"]
    if not path.is_file():
        raise WeightsError(f"weights file for model {mid!r} is missing: {path}")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise WeightsError(f"weights file {path.name} does not match the registry for model {mid!r} (SHA-256 differs)")
    return mid, path, entry


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise WeightsError(f"{path}: not a readable codec weights file ({exc})") from None


def register_model(folder: Path, model_id: str, arrays: dict[str, np.ndarray], record: dict, entry: dict,
                   make_default: bool = True) -> dict:
    """Write ``<id>.npz`` and ``<id>.json`` into ``folder`` and add the model to its registry.

    Every file is written atomically, so an interrupted export leaves the old model usable.
    """
    import io
    import time

    from radseal.io.files import atomic_write

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot create the weights folder ({exc.strerror or exc})") from None
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    npz_path = folder / f"{model_id}.npz"
    atomic_write(npz_path, buf.getvalue(), mode=0o644)
    record = {
        "model_id": model_id,
        **record,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "file": npz_path.name,
        "bytes": npz_path.stat().st_size,
        "sha256": sha256_file(npz_path),
    }
    atomic_write(folder / f"{model_id}.json", (json.dumps(record, indent=2) + "\n").encode(), mode=0o644)
    reg_path = folder / REGISTRY_NAME
    reg = json.loads(reg_path.read_text()) if reg_path.is_file() else {"default": model_id, "models": {}}
    reg["models"][model_id] = {"file": record["file"], "sha256": record["sha256"], "bytes": record["bytes"], **entry}
    current = reg["models"].get(reg.get("default"), {})
    # A default that codes this model's weights its own way (rsc3 over rsc2) stays the default on a refit.
    if (make_default and current.get("weights_of") != model_id) or reg.get("default") not in reg["models"]:
        reg["default"] = model_id
    atomic_write(reg_path, (json.dumps(reg, indent=2) + "\n").encode(), mode=0o644)
    return record
