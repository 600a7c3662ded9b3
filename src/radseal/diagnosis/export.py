"""Convert classifier weights saved by PyTorch (``.pt``, the old format) to the ``.npz`` that ships.

    python -m radseal.diagnosis.export OLD.pt NEW.npz

Needs ``radseal[train]`` (reading a ``.pt`` needs PyTorch); the result loads
without it. The tensors are copied bit for bit (float16 stays float16); the
command refuses to write over its input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from radseal.diagnosis.classifier import Classifier, ClassifierError, save_weights
from radseal.extras import require

OLD_FORMAT = "radseal-classifier-1"


def export_pt(source: str | Path, target: str | Path) -> Path:
    """Write ``target`` (.npz) from a ``radseal-classifier-1`` ``.pt``; check that every tensor survived."""
    torch = require("torch", "train", "reading PyTorch classifier weights")
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ClassifierError(f"{target}: would write over the input")
    try:
        blob = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ClassifierError(f"{source}: not readable as PyTorch classifier weights ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != OLD_FORMAT:
        raise ClassifierError(f"{source}: not a {OLD_FORMAT} weights file")
    state = {k: v.numpy() for k, v in blob["state_dict"].items()}
    path = save_weights(target, state, blob["config"], blob["size"], blob["threshold"], blob.get("info", {}))
    again = Classifier.load(path)
    for k, v in state.items():
        if again.state[k].dtype != v.dtype or not np.array_equal(again.state[k], v):
            raise ClassifierError(f"{path}: tensor {k} did not survive the export")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radseal.diagnosis.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="classifier weights saved by PyTorch (.pt)")
    parser.add_argument("target", help="the .npz to write")
    args = parser.parse_args(argv)
    try:
        path = export_pt(args.source, args.target)
    except ClassifierError as exc:
        print(f"radseal: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
