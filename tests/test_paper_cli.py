"""`radseal paper roundtrip`: refusal without the flag, honest sizes, outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from radseal.cli import main


def _one_error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("radseal: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_refuses_without_the_insecure_flag(rg1_path, rg3_path, tmp_path, capsys):
    out = tmp_path / "rt"
    code = main(["paper", "roundtrip", str(rg1_path), "--key-image", str(rg3_path), "--out", str(out)])
    assert code != 0
    line = _one_error_line(capsys.readouterr().err)
    assert "--insecure-paper-cipher" in line and "insecure" in line
    assert not out.exists()


def test_missing_image_is_a_one_line_error(rg3_path, tmp_path, capsys):
    code = main(["paper", "roundtrip", str(tmp_path / "nope.dcm"), "--key-image", str(rg3_path), "--insecure-paper-cipher", "--out", str(tmp_path / "o")])
    assert code != 0
    err = capsys.readouterr().err
    assert "nope.dcm" in err.splitlines()[-1] and err.splitlines()[-1].startswith("radseal: error: ")


def test_bad_weights_is_a_one_line_error(rg1_path, rg3_path, tmp_path, capsys):
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"\x00" * 10)
    code = main(["paper", "roundtrip", str(rg1_path), "--key-image", str(rg3_path), "--insecure-paper-cipher", "--weights", str(bad), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "w.pt" in capsys.readouterr().err.splitlines()[-1]


def _number(text: str, label: str) -> int:
    m = re.search(rf"{label}\s+([\d,]+) bytes", text)
    assert m, f"no '{label}' line in:\n{text}"
    return int(m.group(1).replace(",", ""))


@pytest.mark.slow
def test_roundtrip_reports_real_sizes_and_writes_outputs(rg1_path, rg3_path, tmp_path, capsys):
    out = tmp_path / "rt"
    code = main(["paper", "roundtrip", str(rg1_path), "--key-image", str(rg3_path), "--insecure-paper-cipher", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "WARNING" in captured.err and "NOT encryption" in captured.err
    text = captured.out

    latent = np.load(out / "encrypted_latent.npy")
    assert latent.shape == (128, 50, 50) and latent.dtype == np.float32
    sent = _number(text, r"sent \(E\)")
    assert sent == latent.nbytes == 128 * 50 * 50 * 4
    assert _number(text, "input file") == rg1_path.stat().st_size
    assert _number(text, "network input") == 200 * 200
    expansion = re.search(r"expansion\s+([\d.]+)x the 200x200 8-bit input; ([\d.]+)x the input file", text)
    assert float(expansion.group(1)) == pytest.approx(sent / 40000, abs=0.05)
    assert float(expansion.group(2)) == pytest.approx(sent / rg1_path.stat().st_size, abs=0.005)
    mse = float(re.search(r"MSE / MAE\s+([\d.]+)", text).group(1))
    psnr = float(re.search(r"PSNR\s+([\d.]+) dB", text).group(1))
    assert 0 < mse < 1 and psnr == pytest.approx(10 * np.log10(1 / mse), abs=0.05)
    assert "sign lost" not in text  # the shipped model is ReLU: its latent is >= 0, the cipher loses nothing
    for name in ("original.png", "retrieved.png", "fig5.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.part"))


@pytest.mark.parametrize("variant,formula", [("squares", "E = Z^2 + K^2"), ("square-of-sum", "E = (Z + K)^2")])
def test_each_cipher_variant_refuses_without_the_insecure_flag(variant, formula, rg1_path, rg3_path, tmp_path, capsys):
    out = tmp_path / "rt"
    code = main(["paper", "roundtrip", str(rg1_path), "--key-image", str(rg3_path), "--cipher", variant, "--out", str(out)])
    assert code != 0
    line = _one_error_line(capsys.readouterr().err)
    assert "--insecure-paper-cipher" in line and formula in line
    assert not out.exists()


def test_unknown_cipher_variant_is_a_usage_error(rg1_path, rg3_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["paper", "roundtrip", str(rg1_path), "--key-image", str(rg3_path), "--cipher", "xor", "--insecure-paper-cipher", "--out", str(tmp_path / "o")])
    assert exc.value.code != 0
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _png(path, seed: int):
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    px = (rng.random((120, 100)) * 60 + np.linspace(40, 180, 100)[None, :]).astype(np.uint8)
    PILImage.fromarray(px).save(path)
    return path


def _roundtrip(tmp_path, capsys, variant: str, extra: list[str] = ()) -> tuple[str, str, np.ndarray]:
    image, key = _png(tmp_path / "x.png", 1), _png(tmp_path / "k.png", 2)
    out = tmp_path / f"rt-{variant}"
    code = main(["paper", "roundtrip", str(image), "--key-image", str(key), "--insecure-paper-cipher", "--cipher", variant, "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err, np.load(out / "encrypted_latent.npy")


def test_roundtrip_square_of_sum_runs_and_sends_the_square_of_the_sum(tmp_path, capsys):
    text, err, e_sum = _roundtrip(tmp_path, capsys, "square-of-sum")
    assert "E = (Z + K)^2" in err and "NOT encryption" in err
    assert "square-of-sum: E = (Z + K)^2, decrypted as Z = sqrt(E) - K" in text
    assert "sign lost" not in text  # the shipped ReLU model: Z, K >= 0, both readings invert
    _, _, e_sq = _roundtrip(tmp_path, capsys, "squares")
    # Same image, key and model: (Z + K)^2 = Z^2 + K^2 + 2ZK >= Z^2 + K^2, larger wherever Z and K are both > 0.
    assert e_sum.shape == e_sq.shape
    assert (e_sum >= e_sq - 1e-4).all() and (e_sum > e_sq + 1e-3).any()
    mse = float(re.search(r"MSE / MAE\s+([\d.]+)", text).group(1))
    assert 0 < mse < 0.1


def test_roundtrip_reports_where_each_variant_loses_the_sign(tmp_path, capsys):
    import torch

    from radseal.paper.autoencoder import AutoencoderConfig, PaperAutoencoder, save_autoencoder

    torch.manual_seed(0)
    weights = save_autoencoder(PaperAutoencoder(AutoencoderConfig(3, "tanh")), tmp_path / "tanh.pt")
    shares = {}
    for variant, where in (("squares", "Z < 0"), ("square-of-sum", "Z + K < 0")):
        text, _, _ = _roundtrip(tmp_path, capsys, variant, ["--weights", str(weights)])
        m = re.search(r"sign lost on ([\d.]+) % of the latent \(([^)]*)\)", text)
        assert m, text
        assert m.group(2) == where
        shares[variant] = float(m.group(1))
    assert 0 < shares["square-of-sum"] and 0 < shares["squares"] < 100
