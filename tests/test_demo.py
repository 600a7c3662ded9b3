"""``radseal demo`` runs the whole path offline and says what it did."""

from __future__ import annotations

import pydicom
import pytest

from radseal.cli import main


@pytest.mark.slow
def test_demo_runs_the_whole_path(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--sample", "RG3", "--quality", "4"]) == 0
    text = capsys.readouterr().out
    for expected in ("10 bits stored", "sealed container", "ratio", "PSNR", "authentic", "time:"):
        assert expected in text
    modes = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("    lossless")
             or line.startswith("    max error")}
    assert set(modes) == {"lossless", "max"}, text  # lossless and the bounded-error row, beside the lossy default
    assert modes["lossless"][-1] == "exact" and "max error 4" in " ".join(modes["max"])
    assert float(modes["max"][3]) < float(modes["lossless"][1])  # a bound of 4 costs fewer bits than lossless
    ds = pydicom.dcmread(out / "RG3-decoded.dcm")
    assert ds.BitsStored == 10 and ds.LossyImageCompression == "01"
    assert "DERIVED" in ds.ImageType
    assert (out / "RG3.rsl").stat().st_size < ds.Rows * ds.Columns * 2
    assert (out / "keys" / "receiver.key").stat().st_mode & 0o077 == 0


def test_demo_help_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "pydicom-data" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_default_rate_meets_jpeg2000_at_30_to_1(tmp_path, capsys):
    import re

    assert main(["demo", "--out", str(tmp_path / "demo"), "--sample", "RG3"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("default rate:"))
    m = re.search(r"at 30:1 \(0\.533 bpp target, ([0-9.]+) bpp, ([0-9.]+) dB\): ([0-9.]+|inf) dB", line)
    assert m, line
    assert float(m.group(1)) <= 16 / 30 and float(m.group(3)) >= float(m.group(2))
    recon = next(ln for ln in text.splitlines() if "reconstruction:" in ln)
    assert re.search(r"(lossy quality \d+|max error \d+|lossless)$", recon), recon
