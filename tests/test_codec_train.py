"""Training: resumable checkpoints, and data-parallel training under torchrun (gloo, 2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from radseal.cli import main


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train.log").read_text().splitlines()]


def test_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-codec", "--synthetic", "--out", str(out), "--crop", "64", "--batch", "2", "--log-every", "1", "--no-progress", "--threads", "1"]
    assert main(args + ["--steps", "2"]) == 0
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["step"] == 2 and "optimizer" in first and first["optimizer"]["state"]
    assert main(args + ["--steps", "4", "--resume"]) == 0
    second = torch.load(out / "last.pt", weights_only=False)
    assert second["step"] == 4
    steps = [r["step"] for r in _log(out)]
    assert steps == [1, 2, 3, 4]
    assert all(r["steps_per_s"] > 0 and "bpp" in r and "psnr" in r for r in _log(out))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train-codec", "--synthetic", "--out", str(tmp_path / "none"), "--resume", "--steps", "1"]) != 0
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "radseal", "train-codec", "--synthetic", "--out", str(out), "--steps", "2",
        "--crop", "64", "--batch", "2", "--log-every", "1", "--no-progress", "--threads", "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 2
    assert all(r["world"] == 2 for r in _log(out))
