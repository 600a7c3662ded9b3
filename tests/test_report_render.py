"""The evaluation report renders in a real browser (headless Chromium) with its figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from evaluate_helpers import make_tiny_dataset, pil_jpeg_codec
from radseal.evaluate.report import evaluate
from radseal.evaluate.runner import EvalConfig

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium'; scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def report(tmp_path_factory, rg1_path, rg3_path):
    root = make_tiny_dataset(tmp_path_factory.mktemp("data"), rg1_path, rg3_path, per_class=1)
    out = tmp_path_factory.mktemp("report")
    evaluate(EvalConfig(data=root, out=out, command="render test", progress=False), [pil_jpeg_codec()], n_boot=20)
    return out / "report.html"


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_dom_has_every_figure_decoded(report, tmp_path):
    n_img = report.read_text().count("<img ")
    assert n_img >= 5
    res = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", report.as_uri())
    dom = res.stdout
    assert "Diagnostic fidelity of compression" in dom, res.stderr[-2000:]
    # The report's load script stamps each decoded image with its natural size.
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == n_img and min(widths) > 100
    assert f'data-figures-loaded="{n_img}"' in dom


def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, "--window-size=1280,1800", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    px = np.asarray(PILImage.open(shot).convert("L"), dtype=np.float32)
    assert px.shape == (1800, 1280)
    assert px.std() > 20  # text, tables and plots, not an empty page
    # The figures area (below the tables) holds plot pixels: many distinct grey levels.
    assert len(np.unique(px[600:].astype(np.uint8))) > 50
