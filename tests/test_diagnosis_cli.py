"""``radseal encode --preserve-diagnosis`` from the command line, with the shipped codec and classifier."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from radseal.cli import main
from radseal.image import Image
from radseal.io import read_image, write_png


@pytest.fixture(scope="module")
def keys_and_image(tmp_path_factory, rg3_path):
    d = tmp_path_factory.mktemp("preserve")
    (d / "keys").mkdir()
    assert main(["keygen", "receiver", "hospital", "--out", str(d / "keys")]) == 0
    assert main(["keygen", "device", "unit7", "--out", str(d / "keys")]) == 0
    src = read_image(rg3_path)
    small = PILImage.fromarray((src.display_pixels() * 255).astype(np.uint8)).resize((160, 160), PILImage.Resampling.BOX)
    write_png(Image(np.asarray(small), bits_stored=8), d / "small.png")
    return d


def test_encode_preserve_diagnosis_reports_choice(keys_and_image, capsys):
    d = keys_and_image
    args = ["encode", str(d / "small.png"), "--to", str(d / "keys/hospital.pub"), "--sign", str(d / "keys/unit7.key"), "-o", str(d / "out.rsl")]
    assert main([*args, "--preserve-diagnosis", "--psnr-floor", "10", "--prob-tolerance", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--preserve-diagnosis: quality ")
    assert "  why: quality " in out and "tried q" in out
    assert (d / "out.rsl").stat().st_size > 0
    chosen = int(out.split("quality ", 1)[1].split(" ", 1)[0])
    tried = [line for line in out.splitlines() if line.startswith("  tried q")]
    passing = [int(t.split("q", 1)[1].split(":")[0]) for t in tried if " pass " in t]
    assert chosen == min(passing)


def test_preserve_diagnosis_conflicts_with_quality(keys_and_image, capsys):
    d = keys_and_image
    args = ["encode", str(d / "small.png"), "--to", str(d / "keys/hospital.pub"), "--sign", str(d / "keys/unit7.key"), "-o", str(d / "x.rsl")]
    assert main([*args, "--preserve-diagnosis", "--quality", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--preserve-diagnosis" in err[0]
    assert not (d / "x.rsl").exists()
