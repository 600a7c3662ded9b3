"""Train the autoencoder shipped in radseal/weights/paper (so roundtrip works offline).

    python -m radseal.paper.train_weights --data ../shared/data/cxr --epochs 12

Trains on the data set's ``train/`` split only (20% of it held out for
validation); never sees ``test/``. Writes the weights and a JSON record of
the command, data and per-epoch history beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from radseal.io.dataset import resolve_data_dir
from radseal.io.files import atomic_write
from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder, save_autoencoder, shipped_weights_path
from radseal.paper.data import holdout_split, load_split
from radseal.paper.training import train_autoencoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--loss", default="msle")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(shipped_weights_path()))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = resolve_data_dir(args.data)
    x, y = load_split(data, "train")
    tr, va = holdout_split(y, 0.2, seed=0)
    model = PaperAutoencoder(AutoencoderConfig(depth=3, activation="relu"))
    start = time.time()
    config = {"depth": 3, "activation": "relu", "loss": args.loss, "optimizer": args.optimizer, "batch_size": 16, "input": "200x200 fixed-size view (aspect kept, padded)"}
    data_text = f"{data}/train ({len(tr)} images for training, {len(va)} held out for validation; test/ never used)"
    command = "python -m radseal.paper.train_weights " + " ".join(sys.argv[1:] if argv is None else argv)

    def checkpoint(history: list[dict]) -> None:
        # Written after every epoch, so stopping the run early still leaves usable, documented weights.
        record = {
            "command": command,
            "data": data_text,
            "config": {**config, "epochs_requested": args.epochs, "epochs_completed": len(history)},
            "seconds": round(time.time() - start, 1),
            "history": history,
        }
        save_autoencoder(model, args.out, extra={k: record[k] for k in ("data", "config")})
        atomic_write(str(args.out).removesuffix(".pt") + ".json", json.dumps(record, indent=2).encode())

    history = train_autoencoder(model, x[tr], x[va], args.loss, args.optimizer, args.epochs, desc="shipped AE", on_epoch_end=checkpoint)
    print(json.dumps(history[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
