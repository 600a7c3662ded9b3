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
