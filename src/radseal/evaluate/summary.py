"""From per-image records to per-setting numbers, target checks and crossings.

Targets (issue 6): at 30:1, label agreement with the prediction on the
original of at least 99%, and an AUC drop of at most 0.01. For each codec
the *crossing* is the lowest measured rate from which every higher rate
meets both targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from radseal.diagnosis.metrics import bootstrap_ci, classification_metrics
from radseal.evaluate.codecs import TARGET_RATIO, CodecUnderTest

AGREEMENT_TARGET = 0.99
AUC_DROP_TARGET = 0.01


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


# Bootstrap statistics, vectorised: thousands of resamples per setting through
# scikit-learn's validated metrics would take minutes; these agree with them
# (tests/test_evaluate.py checks) and take microseconds.
def fast_accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean((p >= threshold) == (y == 1)))


def fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _classification(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict:
    m = classification_metrics(y, p)
    if m["auc"] is not None:
        m["accuracy_ci"] = list(bootstrap_ci(y, p, fast_accuracy, n=n_boot, seed=seed)[1:])
        m["auc_ci"] = list(bootstrap_ci(y, p, fast_auc, n=n_boot, seed=seed)[1:])
    return m


def paired_auc_delta_ci(y: np.ndarray, p_ref: np.ndarray, p_test: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of AUC(test) - AUC(ref), resampling cases jointly."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, y.size, y.size)
        if len(np.unique(y[idx])) < 2:
            continue
        deltas.append(fast_auc(y[idx], p_test[idx]) - fast_auc(y[idx], p_ref[idx]))
    a = (1 - level) / 2
    lo, hi = np.quantile(deltas, [a, 1 - a])
    return float(lo), float(hi)


def summarize(records: list[dict], codecs: Sequence[CodecUnderTest], n_boot: int = 1000, seed: int = 0) -> dict:
    originals = {r["image"]: r for r in records if r["codec"] == "original"}
    images = list(originals)
    labelled = all(originals[i]["label"] is not None for i in images)
    y = np.array([originals[i]["label"] if labelled else -1 for i in images])
    p0 = np.array([originals[i]["prob"] for i in images])
    both = labelled and len(set(y.tolist())) == 2
    bits = float(np.mean([originals[i]["bits_stored"] for i in images]))
    target_bpp = bits / TARGET_RATIO
    out = {
        "images": len(images),
        "labelled": labelled,
        "bits_stored_mean": bits,
        "target_ratio": TARGET_RATIO,
        "target_bpp": target_bpp,
        "targets": {"agreement_min": AGREEMENT_TARGET, "auc_drop_max": AUC_DROP_TARGET},
        "original": _classification(y, p0, n_boot, seed) if both else None,
        "codecs": [],
    }
    for codec in codecs:
        rows = []
        for setting in codec.settings:
            by_image = {r["image"]: r for r in records if r["codec"] == codec.name and r["setting"] == setting.label}
            recs = [by_image[i] for i in images if i in by_image]
            if len(recs) != len(images):
                continue
            p = np.array([r["prob"] for r in recs])
            agree = np.array([r["pred"] == originals[r["image"]]["pred"] for r in recs])
            dp = np.abs(p - p0)
            total_bits = sum(8 * r["bytes"] for r in recs)
            total_raw = sum(originals[r["image"]]["bits_stored"] * originals[r["image"]]["height"] * originals[r["image"]]["width"] for r in recs)
            row = {
                "setting": setting.label,
                "quality": setting.quality,
                "target_bpp": setting.bpp,
                "bpp": _mean([r["bpp"] for r in recs]),
                "bpp_min": float(min(r["bpp"] for r in recs)),
                "bpp_max": float(max(r["bpp"] for r in recs)),
                "ratio": total_raw / total_bits,
                "psnr": _mean([r["psnr"] for r in recs]),
                "ms_ssim": _mean([r["ms_ssim"] for r in recs]),
                "agreement": float(agree.mean()),
                "flips": int((~agree).sum()),
                "mean_abs_dp": float(dp.mean()),
                "max_abs_dp": float(dp.max()),
                "encode_s": _mean([r["encode_s"] for r in recs]),
                "decode_s": _mean([r["decode_s"] for r in recs]),
            }
            if both:
                m = _classification(y, p, n_boot, seed)
                row["classification"] = m
                row["accuracy"] = m["accuracy"]
                row["auc"] = m["auc"]
                row["auc_delta"] = m["auc"] - out["original"]["auc"]
                row["auc_delta_ci"] = list(paired_auc_delta_ci(y, p0, p, n_boot, seed))
                row["accuracy_delta"] = m["accuracy"] - out["original"]["accuracy"]
            row["meets_targets"] = bool(row["agreement"] >= AGREEMENT_TARGET and (not both or -row["auc_delta"] <= AUC_DROP_TARGET))
            rows.append(row)
        rows.sort(key=lambda r: r["bpp"])
        out["codecs"].append({
            "name": codec.name,
            "display": codec.display,
            "notes": codec.notes,
            "settings": rows,
            "crossing": crossing(rows),
            "at_target": at_rate(rows, target_bpp),
        })
    return out


def crossing(rows: list[dict]) -> dict:
    """The lowest measured rate from which every higher measured rate meets the targets."""
    if not rows:
        return {"status": "not measured"}
    if not rows[-1]["meets_targets"]:
        return {"status": "never", "note": f"fails even at its highest measured rate ({rows[-1]['bpp']:.3f} bpp)"}
    i = len(rows) - 1
    while i > 0 and rows[i - 1]["meets_targets"]:
        i -= 1
    r = rows[i]
    status = "all" if i == 0 else "from"
    return {"status": status, "setting": r["setting"], "bpp": r["bpp"], "ratio": r["ratio"],
            "below": None if i == 0 else {"setting": rows[i - 1]["setting"], "bpp": rows[i - 1]["bpp"]}}


def at_rate(rows: list[dict], bpp: float) -> dict | None:
    """The measured setting nearest ``bpp`` (in log rate), with agreement and AUC change there."""
    if not rows:
        return None
    r = min(rows, key=lambda r: abs(math.log(r["bpp"] / bpp)))
    keys = ("setting", "bpp", "ratio", "psnr", "ms_ssim", "agreement", "flips", "mean_abs_dp", "max_abs_dp", "auc", "auc_delta", "meets_targets")
    return {k: r.get(k) for k in keys}
