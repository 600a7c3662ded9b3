"""The smoke sweep (two permutations, one epoch) on a tiny generated data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from radseal.cli import main


@pytest.fixture
def tiny_cxr(tmp_path, monkeypatch):
    """train/ and test/ with NORMAL/PNEUMONIA folders of small 8-bit PNGs (pneumonia = brighter blob)."""
    monkeypatch.setenv("RADSEAL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "cxr"
    for split, n in (("train", 4), ("test", 3)):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 120, (48, 40)).astype(np.uint8)
                if label:
                    px[10:30, 8:30] += 100
                PILImage.fromarray(px).save(d / f"{cls.lower()}{i}.png")
    return root


def test_smoke_sweep_writes_table_json_and_figures(tiny_cxr, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["paper", "sweep", "--smoke", "--data", str(tiny_cxr), "--out", str(out), "--no-progress", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "paper_sweep.json").read_text())
    assert result["protocol"]["name"] == "smoke"
    assert len(result["runs"]) == 2
    assert result["data"]["autoencoder_train"] + result["data"]["validation (held out from train/)"] == 6
    for run in result["runs"]:
        assert run["paper_named"]
        assert set(run["checkpoints"]) == {"1"}
        h = run["checkpoints"]["1"]
        assert all(np.isfinite(h[k]) for k in ("train_loss", "train_mse", "train_mae", "val_loss", "val_mse", "val_mae"))
        assert run["seconds_per_epoch"] > 0
        # ReLU latents are >= 0, so the cipher changes the reconstruction only by float rounding.
        assert run["activation"] == "relu" and run["test_latent_negative_fraction"] == 0
        assert abs(run["test_reconstruction"]["mse"] - run["test_reconstruction_without_cipher"]["mse"]) < 1e-4
        test = run["classifier"]["test"]
        assert test["n"] == 6 and np.sum(test["confusion_matrix"]) == 6
    md = (out / "paper_sweep.md").read_text()
    assert md.splitlines()[2].startswith("Command: `radseal paper sweep")
    rows = [l for l in md.splitlines() if l.startswith("| 1 |") or l.startswith("| 2 |")]
    assert len(rows) == 4  # two rows in the autoencoder table, two in the classifier table
    assert "| ref | original images |" in md
    for png in ("loss", "roc", "confusion", "confusion_reference", "fig5"):
        assert (out / f"paper_sweep_{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_without_data_is_a_one_line_error(tmp_path, capsys):
    code = main(["paper", "sweep", "--smoke", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code != 0
    assert capsys.readouterr().err.strip().startswith("radseal: error: ")


def test_runs_record_the_data_folder_as_given_not_as_an_absolute_path(monkeypatch):
    from radseal.paper.data import data_label

    monkeypatch.delenv("RADSEAL_DATA", raising=False)
    assert data_label(None) == "../shared/data/cxr"
    assert data_label("data/cxr") == "data/cxr"
    monkeypatch.setenv("RADSEAL_DATA", "elsewhere/cxr")
    assert data_label(None) == "elsewhere/cxr"
