"""Turn a training checkpoint into shipped weights (the ``update()`` step)."""

from __future__ import annotations

import json
from pathlib import Path

from radseal.extras import require

torch = require("torch", "train", "radseal export-codec")
require("scipy", "train", "radseal export-codec")

from radseal.codec.errors import WeightsError  # noqa: E402
from radseal.codec.model import CodecNet  # noqa: E402
from radseal.codec.runtime import Runtime  # noqa: E402
from radseal.codec.weights import register_model, weights_dir  # noqa: E402

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
    record = {
        "family": "hyperprior",
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
        "export_command": f"radseal export-codec {checkpoint} --out {out}",
    }
    phases_path = checkpoint.parent / "phases.jsonl"
    if phases_path.is_file():
        keep = ("time", "start_step", "world", "batch", "crop", "lr", "threads")
        record["training"]["phases"] = [
            {k: p.get(k) for k in keep} for p in map(json.loads, phases_path.read_text().splitlines()) if p.get("start_step", 0) < record["training"]["steps"]
        ]
    entry = {
        "family": "hyperprior",
        "format_version": FORMAT_VERSION,
        "architecture": record["architecture"],
        "training_steps": record["training"]["steps"],
    }
    # A retrained hyperprior does not displace the default model; registry.json says which is default.
    record = register_model(out, mid, arrays, record, entry, make_default=False)
    return record
