"""``radseal evaluate`` on a tiny data set made from the pydicom-data radiographs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluate_helpers import make_tiny_dataset, pil_jpeg_codec
from radseal.cli import main
from radseal.evaluate.codecs import Setting, _unpad_resize
from radseal.evaluate.report import evaluate
from radseal.evaluate.runner import RECORDS, EvalConfig, select_samples
from radseal.evaluate.summary import crossing, fast_accuracy, fast_auc, summarize
from radseal.io.dataset import Sample, fixed_size
from radseal.image import Image


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, rg1_path, rg3_path):
    root = make_tiny_dataset(tmp_path_factory.mktemp("data"), rg1_path, rg3_path)
    out = tmp_path_factory.mktemp("report")
    results = evaluate(EvalConfig(data=root, out=out, command="test", progress=False), [pil_jpeg_codec()], n_boot=50)
    return root, out, results


def test_report_files_and_numbers(tiny_report):
    root, out, results = tiny_report
    for name in ("report.html", "report.md", "results.json", RECORDS, "rd_curves.png", "fidelity_vs_bpp.png", "roc.png", "confusion_original.png", "samples_1.png"):
        assert (out / name).is_file(), name
    s = json.loads((out / "results.json").read_text())["summary"]
    assert s["images"] == 4 and s["labelled"]
    rows = s["codecs"][0]["settings"]
    assert [r["setting"] for r in rows] == ["q10", "q60"]  # sorted by rate
    assert rows[0]["bpp"] < rows[1]["bpp"] and rows[0]["psnr"] < rows[1]["psnr"]
    records = [json.loads(line) for line in (out / RECORDS).read_text().splitlines()]
    originals = {r["image"]: r for r in records if r["codec"] == "original"}
    for r in records:
        if r["codec"] == "original":
            continue
        o = originals[r["image"]]
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (o["height"] * o["width"]))
        assert r["ratio"] == pytest.approx(8 / r["bpp"])
        assert 0.0 <= r["prob"] <= 1.0
    q10 = [r for r in records if r["setting"] == "q10"]
    agree = np.mean([r["pred"] == originals[r["image"]]["pred"] for r in q10])
    assert rows[0]["agreement"] == pytest.approx(agree)
    assert rows[0]["max_abs_dp"] == pytest.approx(max(abs(r["prob"] - originals[r["image"]]["prob"]) for r in q10))


def test_html_is_self_contained(tiny_report):
    _, out, _ = tiny_report
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 5
    assert "http://" not in html and "https://" not in html
    assert "src=\"" not in html.replace('src="data:', "")


def test_resume_reuses_records(tiny_report, rg1_path):
    root, out, _ = tiny_report
    before = (out / RECORDS).read_text()
    evaluate(EvalConfig(data=root, out=out, command="again", progress=False, samples=0), [pil_jpeg_codec()], n_boot=20)
    assert (out / RECORDS).read_text() == before  # nothing measured twice


def test_select_samples_alternates_classes(tmp_path):
    samples = [Sample(tmp_path / f"n{i}", 0, "test") for i in range(5)] + [Sample(tmp_path / f"p{i}", 1, "test") for i in range(5)]
    chosen = select_samples(samples, 4)
    assert [s.label for s in chosen] == [0, 1, 0, 1]
    assert select_samples(samples, None) == samples


def test_fast_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)  # ties on purpose
    assert fast_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert fast_accuracy(y, p) == pytest.approx(np.mean((p >= 0.5) == y))


def test_crossing_rules():
    rows = [{"setting": s, "bpp": b, "ratio": 8 / b, "meets_targets": m} for s, b, m in [("a", 0.1, True), ("b", 0.2, False), ("c", 0.4, True), ("d", 0.8, True)]]
    x = crossing(rows)
    assert x["status"] == "from" and x["setting"] == "c" and x["below"]["setting"] == "b"
    assert crossing([dict(r, meets_targets=True) for r in rows])["status"] == "all"
    assert crossing([dict(r, meets_targets=False) for r in rows])["status"] == "never"


def test_summary_flags_a_label_flip():
    recs = [
        {"image": f"i{i}", "codec": "original", "label": i % 2, "prob": p, "pred": int(p >= 0.5), "bits_stored": 8, "height": 10, "width": 10}
        for i, p in enumerate([0.1, 0.9, 0.2, 0.8])
    ]
    probs = [0.1, 0.9, 0.6, 0.8]  # image 2 flips to pneumonia
    recs += [
        {"image": f"i{i}", "codec": "c", "setting": "s", "label": i % 2, "prob": p, "pred": int(p >= 0.5), "bytes": 10, "bpp": 0.8,
         "psnr": 40.0, "ms_ssim": 0.99, "encode_s": 0.0, "decode_s": 0.0}
        for i, p in enumerate(probs)
    ]
    from radseal.evaluate.codecs import CodecUnderTest

    codec = CodecUnderTest("c", "C", [Setting("s")], None, None)
    s = summarize(recs, [codec], n_boot=20)
    row = s["codecs"][0]["settings"][0]
    assert row["flips"] == 1 and row["agreement"] == 0.75 and not row["meets_targets"]
    assert row["max_abs_dp"] == pytest.approx(0.4)
    assert row["ratio"] == pytest.approx(8 * 4 * 100 / (8 * 10 * 4))


def test_paper_unpad_inverts_fixed_size():
    x = np.linspace(0, 1, 300 * 180, dtype=np.float32).reshape(180, 300)
    img = Image((x * 255).astype(np.uint8), bits_stored=8)
    back = _unpad_resize(fixed_size(img, 200), 180, 300, 200)
    assert back.shape == (180, 300)
    assert np.abs(back - img.normalized()).mean() < 0.01


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "o"), "--codecs", "nosuchcodec", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("radseal: error:") and "nosuchcodec" in err[0]
    assert main(["evaluate", "--out", str(tmp_path / "o"), "--bpp", "0.1,abc"]) == 2
    assert "--bpp" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing"), "--codecs", "radseal", "--qualities", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.html").exists()


def _small_image(rg3_path, side: int = 96) -> Image:
    from PIL import Image as PILImage

    from radseal.io import read_image

    src = read_image(rg3_path)
    small = PILImage.fromarray((src.display_pixels() * 255).astype(np.uint8)).resize((side + 20, side), PILImage.Resampling.BOX)
    return Image(np.asarray(small), bits_stored=8)


def test_radseal_adapter_matches_the_codec(rg3_path):
    from radseal.codec import Codec
    from radseal.evaluate.codecs import TARGET_BPP_8BIT, radseal_codec

    codec = Codec.pretrained()
    qs = [codec.qualities[0], codec.qualities[-1]]
    cut = radseal_codec(qs)
    assert [s.label for s in cut.settings] == [f"q{q}" for q in qs] + [f"{TARGET_BPP_8BIT:g} bpp"]
    img = _small_image(rg3_path)
    for s in cut.settings[:2]:
        assert cut.compress(img, s) == codec.compress(img, quality=s.quality)  # shared analysis, same bytes
    assert cut.compress(img, cut.settings[2]) == codec.compress(img, bpp=TARGET_BPP_8BIT)
    assert cut.decompress(cut.compress(img, cut.settings[1])).shape == img.shape


def test_paper_adapter_round_trip(rg3_path):
    from radseal.evaluate.codecs import paper_codec
    from radseal.paper.autoencoder import shipped_weights_path

    if not shipped_weights_path().is_file():
        pytest.skip("the paper autoencoder's weights are not shipped in this checkout")
    cut = paper_codec()
    img = _small_image(rg3_path)
    data = cut.compress(img, cut.settings[0])
    assert len(data) == 11 + 128 * 50 * 50 * 4  # header + float32 latent, as the paper sends it
    back = cut.decompress(data)
    assert back.shape == img.shape and back.bits_stored == 8
