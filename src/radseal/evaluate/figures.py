"""The report's figures as PNG files: RD curves, fidelity against rate, ROC,
confusion matrices and sample panels (original, reconstruction, error map).

ROC curves and confusion matrices come from :mod:`radseal.diagnosis.plots`.
"""

from __future__ import annotations

import math
from pathlib import Path

from radseal.extras import require

matplotlib = require("matplotlib", "evaluate", "the evaluation report's figures")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radseal.diagnosis.plots import plot_confusion, plot_roc, save_figure  # noqa: E402
from radseal.evaluate.metrics import ms_ssim_db  # noqa: E402

ERROR_GAIN = 20  # error maps show |reconstruction - original| x 20 (one 8-bit level = 0.08 of full scale)


def _style(i: int) -> dict:
    markers = "osD^vP*Xh<>"
    return {"marker": markers[i % len(markers)], "ms": 4, "lw": 1.3}


def _target_line(ax, summary: dict) -> None:
    ax.axvline(summary["target_bpp"], color="grey", ls=":", lw=1)


def _log_rate_axis(ax) -> None:
    """Log x axis labelled 0.1, 0.2, 0.5, 1, ... in plain numbers."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("bits per pixel (log scale)")


def plot_rd(summary: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, c in enumerate(summary["codecs"]):
        rows = [r for r in c["settings"] if r["psnr"] is not None]
        if not rows:
            continue
        x = [r["bpp"] for r in rows]
        axes[0].plot(x, [r["psnr"] for r in rows], label=c["display"], **_style(i))
        axes[1].plot(x, [ms_ssim_db(r["ms_ssim"]) for r in rows], label=c["display"], **_style(i))
    for ax, ylabel in zip(axes, ("PSNR (dB, native peak)", "MS-SSIM (dB: -10 log10(1 - MS-SSIM))")):
        _log_rate_axis(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        _target_line(ax, summary)
    axes[0].set_title(f"Rate-distortion (dotted: {summary['target_ratio']:.0f}:1)")
    axes[1].legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_fidelity(summary: dict, path: Path) -> Path:
    labelled = summary["original"] is not None
    fig, axes = plt.subplots(1, 3 if labelled else 2, figsize=(15 if labelled else 10, 4.2))
    for i, c in enumerate(summary["codecs"]):
        rows = c["settings"]
        if not rows:
            continue
        x = [r["bpp"] for r in rows]
        line = axes[0].plot(x, [100 * r["agreement"] for r in rows], label=c["display"], **_style(i))[0]
        axes[1].plot(x, [r["mean_abs_dp"] for r in rows], color=line.get_color(), **_style(i))
        axes[1].plot(x, [r["max_abs_dp"] for r in rows], color=line.get_color(), ls=":", lw=1)
        if labelled:
            axes[2].plot(x, [r["auc"] for r in rows], color=line.get_color(), **_style(i))
    axes[0].axhline(100 * summary["targets"]["agreement_min"], color="red", lw=0.8, ls="--")
    axes[0].set_ylabel("label agreement with original (%)")
    axes[0].set_title("Label agreement (red: 99% target)")
    axes[1].set_ylabel("|p(reconstruction) - p(original)|")
    axes[1].set_title("Probability change (solid mean, dotted max)")
    axes[1].set_yscale("symlog", linthresh=1e-3)
    if labelled:
        auc0 = summary["original"]["auc"]
        axes[2].axhline(auc0, color="black", lw=0.8, label=f"original {auc0:.3f}")
        axes[2].axhline(auc0 - summary["targets"]["auc_drop_max"], color="red", lw=0.8, ls="--", label="original - 0.01")
        axes[2].set_ylabel("AUC on reconstructions")
        axes[2].set_title("AUC (test labels)")
        axes[2].legend(fontsize=7, loc="center left")
    for ax in axes:
        _log_rate_axis(ax)
        ax.grid(alpha=0.3, which="both")
        _target_line(ax, summary)
    axes[0].legend(fontsize=7, loc="center left")  # the low-agreement corner holds data (the paper's point)
    return save_figure(fig, path)


def _at_target_rows(summary: dict) -> list[tuple[str, dict]]:
    out = []
    for c in summary["codecs"]:
        t = c["at_target"]
        if t is None:
            continue
        row = next(r for r in c["settings"] if r["setting"] == t["setting"])
        out.append((f"{c['display']} {row['setting']} ({row['bpp']:.3f} bpp)", row))
    return out


def plot_rocs(summary: dict, path: Path) -> Path | None:
    if summary["original"] is None or summary["original"]["roc"] is None:
        return None
    o = summary["original"]
    curves = {"original": (o["roc"]["fpr"], o["roc"]["tpr"], o["auc"])}
    for name, row in _at_target_rows(summary):
        m = row.get("classification")
        if m and m["roc"]:
            curves[name] = (m["roc"]["fpr"], m["roc"]["tpr"], m["auc"])
    return plot_roc(curves, path, title=f"ROC: originals and each codec nearest {summary['target_ratio']:.0f}:1")


def plot_confusions(summary: dict, out: Path) -> list[tuple[str, Path]]:
    if summary["original"] is None:
        return []
    labels = ["NORMAL", "PNEUMONIA"]
    files = [("original", plot_confusion(summary["original"]["confusion_matrix"], labels, out / "confusion_original.png", "original"))]
    for c in summary["codecs"]:
        t = c["at_target"]
        if t is None:
            continue
        row = next(r for r in c["settings"] if r["setting"] == t["setting"])
        if "classification" in row:
            title = f"{c['display']} {row['setting']}\n{row['bpp']:.3f} bpp"
            files.append((c["name"], plot_confusion(row["classification"]["confusion_matrix"], labels, out / f"confusion_{c['name']}.png", title)))
    return files


def plot_samples(summary: dict, crops: dict, records: list[dict], out: Path) -> list[tuple[str, Path]]:
    """One panel per sample image: a row per codec (its setting nearest 30:1)."""
    files = []
    by_key = {(r["image"], r["codec"], r["setting"]): r for r in records}
    for n, (image, views) in enumerate(sorted(crops.items())):
        rows = []
        for c in summary["codecs"]:
            t = c["at_target"]
            if t and f"{c['name']}|{t['setting']}" in views:
                rows.append((c, t["setting"], views[f"{c['name']}|{t['setting']}"]))
        if not rows:
            continue
        orig = views["original"]
        fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3.1 * len(rows)), squeeze=False)
        for i, (c, setting, recon) in enumerate(rows):
            rec = by_key.get((image, c["name"], setting), {})
            err = np.abs(recon.astype(np.float32) - orig.astype(np.float32)) * ERROR_GAIN
            axes[i, 0].imshow(orig, cmap="gray", vmin=0, vmax=1)
            axes[i, 0].set_title("original", fontsize=8)
            axes[i, 1].imshow(recon, cmap="gray", vmin=0, vmax=1)
            ps = rec.get("psnr")
            axes[i, 1].set_title(
                f"{c['display']} {setting}\n{rec.get('bpp', math.nan):.3f} bpp, "
                f"{'lossless' if ps is None else f'{ps:.1f} dB'}, p={rec.get('prob', math.nan):.3f} (orig {rec.get('prob_original', math.nan):.3f})",
                fontsize=7,
            )
            axes[i, 2].imshow(np.clip(err, 0, 1), cmap="inferno", vmin=0, vmax=1)
            axes[i, 2].set_title(f"|error| x {ERROR_GAIN}", fontsize=8)
            for ax in axes[i]:
                ax.set_axis_off()
        fig.suptitle(f"{image} (centre crop at native resolution)", fontsize=9)
        fig.tight_layout()
        files.append((image, save_figure(fig, out / f"samples_{n + 1}.png")))
    return files
