"""The paper's three cases at its epochs: resumable run (radseal.paper.paper_epochs)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image as PILImage

from radseal.cli import main
from radseal.paper.paper_epochs import PAPER_EPOCHS_SMOKE, PAPER_TABLES, ResumeMismatch, run_paper_epochs


@pytest.fixture
def tiny_cxr(tmp_path, monkeypatch):
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


def _numbers(summary: dict) -> list:
    """Every measured number except timings."""
    out = []
    for c in summary["cases"]:
        for h in c["history"]:
            out.append([h[k] for k in sorted(h) if k != "seconds"])
        for stage, r in sorted(c["classifier"].items()):
            out.append([stage, r["test"]["accuracy"], r["test"]["auc"], r["test_reconstruction"]["mse"]])
    return out


# Two of the cases (one of each depth) keep the resume test short.
TWO_CASES = replace(PAPER_EPOCHS_SMOKE, cases=("case2", "case1"))


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_numbers(tiny_cxr, tmp_path):
    whole = run_paper_epochs(tiny_cxr, tmp_path / "whole", TWO_CASES, command="c", progress=False)
    assert whole["complete"] and whole["epochs_done"] == 4

    part = tmp_path / "part"
    first = run_paper_epochs(tiny_cxr, part, TWO_CASES, command="c", progress=False, stop_after_units=3)
    assert not first["complete"]
    # reference classifier, first case epoch 1, its classifier at epoch 1: the stage order
    assert [c["epochs_done"] for c in first["cases"]] == [1, 0]
    assert list(first["cases"][0]["classifier"]) == ["1"]
    md = (part / "paper_epochs.md").read_text()
    assert "**not complete**: 1 of 4 epochs ran" in md and "not reached" in md
    second = run_paper_epochs(tiny_cxr, part, TWO_CASES, command="c", progress=False, stop_after_units=3)
    assert [c["epochs_done"] for c in second["cases"]] == [2, 1]  # every case reaches stage 1 before stage 2
    final = run_paper_epochs(tiny_cxr, part, TWO_CASES, command="c", progress=False)
    assert final["complete"]
    assert _numbers(final) == _numbers(whole)  # same batches, same optimizer state: identical results
    assert len(final["sessions"]) == 3
    units = [json.loads(l) for l in (part / "progress.jsonl").read_text().splitlines()]
    assert sum(u["unit"] == "epoch" for u in units) == 4
    assert sum(u["unit"] == "classifier" for u in units) == 4


def test_a_run_folder_of_another_protocol_is_not_continued(tiny_cxr, tmp_path):
    out = tmp_path / "o"
    run_paper_epochs(tiny_cxr, out, PAPER_EPOCHS_SMOKE, command="c", progress=False, stop_after_units=1)
    with pytest.raises(ResumeMismatch):
        run_paper_epochs(tiny_cxr, out, replace(PAPER_EPOCHS_SMOKE, batch_size=1), command="c", progress=False)


@pytest.mark.slow
def test_cli_paper_epochs_smoke_and_resume_with_the_paper_tables_beside_ours(tiny_cxr, tmp_path, capsys):
    out = tmp_path / "pe"
    args = ["paper", "sweep", "--protocol", "paper-epochs", "--smoke", "--data", str(tiny_cxr), "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(args) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "6 of 6 epochs done; complete: True" in text
    summary = json.loads((out / "paper_epochs.json").read_text())
    assert [c["name"] for c in summary["cases"]] == ["MSE+rmsprop+3L+relu", "MSLE+adagrad+2L+relu", "HINGE+rmsprop+3L+relu"]
    md = (out / "paper_epochs.md").read_text()
    assert "| paper | 0.798 | 0.751 | 0.447 | 0.487 | 0.466 | 0.626 |" in md  # Table 2
    assert "| 1 | - | - | - |" in md  # the paper has no numbers at the smoke run's epochs
    assert PAPER_TABLES["case1"]["autoencoder"][50] == (0.0012, 0.0221, 0.0012)  # Table 1
    assert PAPER_TABLES["case3"]["classifier"]["test_accuracy"] == 0.2032  # Table 6
    assert summary["command"].startswith("radseal paper sweep --data ") and "--protocol paper-epochs" in summary["command"]
    # Run again: nothing left to do, nothing retrained.
    before = (out / "progress.jsonl").read_text()
    assert main(args) == 0
    assert (out / "progress.jsonl").read_text() == before


def test_cli_paper_epochs_rejects_epochs_override(tiny_cxr, tmp_path, capsys):
    code = main(["paper", "sweep", "--protocol", "paper-epochs", "--epochs", "3", "--data", str(tiny_cxr), "--out", str(tmp_path / "o")])
    assert code != 0
    assert capsys.readouterr().err.strip().startswith("radseal: error: ")
    assert not (tmp_path / "o").exists()
