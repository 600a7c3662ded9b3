"""``radseal evaluate``: measure, summarise, and write the report.

Output folder:

* ``report.html``: self-contained (every figure embedded as a base64 PNG),
* ``report.md``: the command and the key tables,
* ``results.json``: everything the tables and plots show,
* ``records.jsonl``: one line per (image, codec, setting),
* ``*.png``: RD curves, fidelity against rate, ROC, confusion matrices, sample panels.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import platform
from collections.abc import Sequence
from pathlib import Path

from radseal.evaluate import figures
from radseal.evaluate.codecs import CodecUnderTest, build_codecs
from radseal.evaluate.runner import EvalConfig, run_evaluation
from radseal.evaluate.summary import summarize
from radseal.io.files import atomic_write


def evaluate(config: EvalConfig, codecs: Sequence[CodecUnderTest] | None = None, classifier=None, n_boot: int = 1000) -> dict:
    """Run the evaluation described by ``config`` and write its report; return the results."""
    if classifier is None:
        from radseal.diagnosis.classifier import Classifier

        classifier = Classifier.pretrained()
    if codecs is None:
        codecs = build_codecs(None)
    run = run_evaluation(config, codecs, classifier)
    summary = summarize(run["records"], codecs, n_boot=n_boot)
    out = Path(config.out)
    figs = {
        "rd": figures.plot_rd(summary, out / "rd_curves.png"),
        "fidelity": figures.plot_fidelity(summary, out / "fidelity_vs_bpp.png"),
        "roc": figures.plot_rocs(summary, out / "roc.png"),
    }
    confusions = figures.plot_confusions(summary, out)
    samples = figures.plot_samples(summary, run["crops"], run["records"], out)
    results = {
        "command": config.command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": run["root"],
        "split": config.split,
        "limit": config.limit,
        "classifier": {"size": getattr(classifier, "size", None), "threshold": getattr(classifier, "threshold", None), **getattr(classifier, "info", {})},
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "codec_identity": {c.name: c.identity for c in codecs},
        **config.extra,
        "summary": summary,
        "figures": {
            **{k: v.name for k, v in figs.items() if v is not None},
            "confusion": {k: v.name for k, v in confusions},
            "samples": {k: v.name for k, v in samples},
        },
    }
    atomic_write(out / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    atomic_write(out / "report.md", markdown_report(results).encode())
    atomic_write(out / "report.html", html_report(results, out).encode())
    return results


# -- tables ----------------------------------------------------------------------------------
def _f(v, fmt: str = ".3f", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _ci(v, ci, fmt=".3f") -> str:
    return _f(v, fmt) if not ci else f"{_f(v, fmt)} [{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]"


TABLE_HEAD = ["codec", "setting", "bpp", "ratio", "PSNR dB", "MS-SSIM", "agree %", "flips", "mean |Δp|", "max |Δp|", "acc", "AUC", "ΔAUC [95% CI]", "meets"]


def _row(c: dict, r: dict) -> list[str]:
    return [
        c["display"], r["setting"], _f(r["bpp"]), f"{r['ratio']:.1f}:1", _f(r["psnr"], ".2f", "lossless"), _f(r["ms_ssim"], ".4f"),
        f"{100 * r['agreement']:.1f}", str(r["flips"]), _f(r["mean_abs_dp"], ".4f"), _f(r["max_abs_dp"], ".3f"),
        _f(r.get("accuracy")), _f(r.get("auc")), _ci(r.get("auc_delta"), r.get("auc_delta_ci"), "+.3f"), "yes" if r["meets_targets"] else "no",
    ]


def _crossing_text(c: dict) -> str:
    x = c["crossing"]
    if x["status"] == "all":
        return f"meets both targets at every measured rate, down to {x['bpp']:.3f} bpp ({x['ratio']:.0f}:1)"
    if x["status"] == "from":
        return f"meets both targets from {x['bpp']:.3f} bpp ({x['ratio']:.0f}:1, {x['setting']}) upward; fails at {x['below']['bpp']:.3f} bpp"
    return x.get("note", x["status"])


def _key_rows(results: dict) -> list[list[str]]:
    return [_row(c, next(r for r in c["settings"] if r["setting"] == c["at_target"]["setting"])) for c in results["summary"]["codecs"] if c["at_target"]]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _original_text(s: dict) -> str:
    o = s["original"]
    if o is None:
        return "no labels (or one class only): accuracy and AUC not computed"
    return (
        f"classifier on the {s['images']} originals: accuracy {_ci(o['accuracy'], o.get('accuracy_ci'))}, "
        f"AUC {_ci(o['auc'], o.get('auc_ci'))} (95% bootstrap CIs)"
    )


def markdown_report(results: dict) -> str:
    s = results["summary"]
    parts = [
        "# Diagnostic fidelity of compression",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Data: `{results['data']}` split `{results['split']}`, {s['images']} images"
        + (f" (--limit {results['limit']}, classes alternated)" if results["limit"] else "")
        + f"; created {results['created']}.",
        "",
        f"Targets at {s['target_ratio']:.0f}:1 ({s['target_bpp']:.3f} bpp at {s['bits_stored_mean']:.0f} bits): "
        f"label agreement >= {100 * s['targets']['agreement_min']:.0f}% and AUC drop <= {s['targets']['auc_drop_max']}.",
        "",
        _original_text(s) + ".",
        "",
        f"## Each codec at its setting nearest {s['target_ratio']:.0f}:1",
        "",
        _md_table(TABLE_HEAD, _key_rows(results)),
        "",
        "## Where each codec crosses the targets",
        "",
    ]
    parts += [f"- **{c['display']}**: {_crossing_text(c)}" for c in s["codecs"]]
    parts += ["", "## Every setting", "", _md_table(TABLE_HEAD, [_row(c, r) for c in s["codecs"] for r in c["settings"]]), ""]
    parts += ["## Figures", ""]
    f = results["figures"]
    for key, title in (("rd", "Rate-distortion"), ("fidelity", "Diagnostic fidelity against rate"), ("roc", "ROC")):
        if key in f:
            parts.append(f"![{title}]({f[key]})")
    parts += [f"![confusion {k}]({v})" for k, v in f["confusion"].items()]
    parts += [f"![samples {k}]({v})" for k, v in f["samples"].items()]
    parts += ["", "bpp: payload bytes x 8 / native pixels (what crosses the wire). Ratio: stored bits per pixel / bpp. "
              "Δp: change of the classifier's pneumonia probability against the original. ΔAUC: AUC on reconstructions minus AUC on originals, "
              "paired bootstrap CI. Flips: images whose predicted label differs from the prediction on the original.", ""]
    return "\n".join(parts)


def _img(out: Path, name: str | None, alt: str) -> str:
    if not name:
        return ""
    data = base64.b64encode((out / name).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td:first-child,td:nth-child(2){text-align:left}code{background:#f4f4f4;padding:1px 4px}
figure{display:inline-block;margin:0.5em;vertical-align:top}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:12px;color:#555}"""

# Marks each figure that decoded (natural size > 0) so a headless browser's DOM dump can prove the figures render.
LOAD_CHECK = (
    "<script>window.addEventListener('load',function(){var n=0;"
    "document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0){"
    "i.dataset.naturalWidth=i.naturalWidth;i.dataset.naturalHeight=i.naturalHeight;n++;}});"
    "document.body.dataset.figuresLoaded=n;});</script>"
)


def html_report(results: dict, out: Path) -> str:
    s = results["summary"]
    f = results["figures"]
    e = html.escape
    body = [
        "<h1>Diagnostic fidelity of compression</h1>",
        f"<p>Command: <code>{e(results['command'])}</code><br>Data: <code>{e(results['data'])}</code>, split {e(str(results['split']))}, "
        f"{s['images']} images; created {e(results['created'])}.</p>",
        f"<p>Targets at {s['target_ratio']:.0f}:1 ({s['target_bpp']:.3f} bpp): label agreement &ge; {100 * s['targets']['agreement_min']:.0f}% "
        f"and AUC drop &le; {s['targets']['auc_drop_max']}. {e(_original_text(s))}.</p>",
        f"<h2>Each codec nearest {s['target_ratio']:.0f}:1</h2>",
        _html_table(TABLE_HEAD, _key_rows(results)),
        "<h2>Where each codec crosses the targets</h2><ul>",
        *[f"<li><b>{e(c['display'])}</b>: {e(_crossing_text(c))}</li>" for c in s["codecs"]],
        "</ul>",
        "<h2>Rate-distortion and fidelity</h2>",
        _img(out, f.get("rd"), "Rate-distortion: PSNR and MS-SSIM against bpp"),
        _img(out, f.get("fidelity"), "Label agreement, probability change and AUC against bpp"),
        "<h2>ROC and confusion matrices</h2>",
        _img(out, f.get("roc"), "ROC curves: originals and each codec nearest 30:1"),
        *[_img(out, v, f"confusion matrix: {k}") for k, v in f["confusion"].items()],
        "<h2>Samples</h2>",
        *[_img(out, v, f"{k}: original, reconstruction, amplified error") for k, v in f["samples"].items()],
        "<h2>Every setting</h2>",
        _html_table(TABLE_HEAD, [_row(c, r) for c in s["codecs"] for r in c["settings"]]),
        "<p>bpp: payload bytes &times; 8 / native pixels. Ratio: stored bits per pixel / bpp. &Delta;p: change of the classifier's pneumonia "
        "probability against the original. &Delta;AUC: AUC on reconstructions minus on originals, paired bootstrap 95% CI. "
        "Compression runs at native resolution; the classifier sees its fixed-size view of each reconstruction.</p>",
    ]
    return f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>radseal: diagnostic fidelity</title><style>{CSS}</style>{LOAD_CHECK}</head><body>{''.join(body)}</body></html>\n"
