"""Turn a training checkpoint into shipped weights (the ``update()`` step)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from radseal.codec.errors import WeightsError
from radseal.codec.model import CodecNet
from radseal.codec.runtime import Runtime
from radseal.codec.weights import REGISTRY_NAME, sha256_file, weights_dir
from radseal.io.files import atomic_write

#: The id of the model built from the current training recipe; bump it when the architecture changes.
CURRENT_MODEL_ID = "rsc1-mshp-n128"
FORMAT_VERSION = 1


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None, model_id: str | None = None) -> dict:
    """Write ``<model_id>.npz``, ``<model_id>.json`` and update ``registry.json`` in ``out_dir``."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise WeightsError(f"{checkpoint}: no such checkpoint")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(f"{checkpoint}: not a readable training checkpoint ({exc})") from None
    cfg = state["config"]
    net = CodecNet(n=cfg["n"], m=cfg["m"], nh=cfg["nh"], nz=cfg["nz"], lambdas=cfg["lambdas"])
    net.load_state_dict(state["model"])
    net.eval()
    arrays = Runtime.export_state(net)
    mid = model_id or CURRENT_MODEL_ID
    out = Path(out_dir) if out_dir else weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    npz_path = out / f"{mid}.npz"
    atomic_write(npz_path, buf.getvalue(), mode=0o644)
    record = {
        "model_id": mid,
        "format_version": FORMAT_VERSION,
        "architecture": {k: cfg[k] for k in ("n", "m", "nh", "nz", "lambdas")},
        "training": {
            "steps": int(state["step"]),
            "elapsed_s": round(float(state.get("elapsed_s", 0.0)), 1),
            "world_size": int(state.get("world_size", 1)),
            "batch_per_process": cfg["batch"],
            "crop": cfg["crop"],
            "lr": cfg["lr"],
            "data": state.get("data", {}),
            "command": (
                f"radseal train-codec --out {cfg['out']} --steps {cfg['steps']} --batch {cfg['batch']} "
                f"--crop {cfg['crop']} --lr {cfg['lr']} (resumed as needed with --resume)"
            ),
        },
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "export_command": f"radseal export-codec {checkpoint} --out {out}",
        "file": npz_path.name,
        "bytes": npz_path.stat().st_size,
        "sha256": sha256_file(npz_path),
    }
    phases_path = checkpoint.parent / "phases.jsonl"
    if phases_path.is_file():
        keep = ("time", "start_step", "world", "batch", "crop", "lr", "threads")
        record["training"]["phases"] = [
            {k: p.get(k) for k in keep} for p in map(json.loads, phases_path.read_text().splitlines()) if p.get("start_step", 0) < record["training"]["steps"]
        ]
    atomic_write(out / f"{mid}.json", (json.dumps(record, indent=2) + "\n").encode(), mode=0o644)
    reg_path = out / REGISTRY_NAME
    reg = json.loads(reg_path.read_text()) if reg_path.is_file() else {"default": mid, "models": {}}
    reg["models"][mid] = {k: record[k] for k in ("file", "sha256", "format_version", "architecture", "bytes")}
    reg["models"][mid]["training_steps"] = record["training"]["steps"]
    reg["default"] = mid
    atomic_write(reg_path, (json.dumps(reg, indent=2) + "\n").encode(), mode=0o644)
    return record
