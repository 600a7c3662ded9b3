"""Running an evaluation: every image through every codec setting, once.

For each image the original is read at native resolution and classified
(through the classifier's fixed-size view); then each codec compresses the
native image, the payload is decoded, and the reconstruction is measured
(rate, PSNR and MS-SSIM at native bit depth) and classified the same way.
One JSON line per (image, codec, setting) goes to ``records.jsonl`` as soon
as it is measured, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radseal.evaluate.codecs import CodecUnderTest, EvaluationError, Setting
from radseal.image import Image
from radseal.io.dataset import Sample, list_samples, recorded_path, resolve_data_dir

CROP = 384  # side of the native-resolution crop kept for the sample panels
RECORDS = "records.jsonl"
CROP_CACHE = ".crops"  # sample-panel crops of reconstructions, for resumed runs


@dataclass
class EvalConfig:
    data: str | Path | None = None
    out: str | Path = "evaluation"
    split: str | None = "test"
    limit: int | None = None
    samples: int = 2  # images shown in the sample panels
    fresh: bool = False  # ignore records.jsonl from an earlier run
    progress: bool = True
    command: str = ""
    extra: dict = field(default_factory=dict)


def select_samples(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` images, alternating classes so a subset stays balanced."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {limit}")
    by_label: dict = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    queues = [list(v) for _, v in sorted(by_label.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]
    out: list[Sample] = []
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def _key(image: str, codec: str, identity: str, setting: str) -> str:
    return f"{image}|{codec}|{identity}|{setting}"


def _load_records(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: measure it again
                continue
            done[rec["key"]] = rec
    return done


def _crop(img: Image) -> np.ndarray:
    """A centred CROP x CROP window of the display view (bright = dense), float32."""
    x = img.display_pixels()
    h, w = x.shape
    top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    return x[top : top + CROP, left : left + CROP]


def run_evaluation(config: EvalConfig, codecs: Sequence[CodecUnderTest], classifier) -> dict:
    """Measure every (image, codec, setting); return records, crops and what was run."""
    from tqdm import tqdm

    from radseal.evaluate.metrics import ms_ssim, psnr
    from radseal.io import read_image

    root = resolve_data_dir(config.data)
    samples = select_samples(list_samples(root, config.split), config.limit)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / RECORDS
    if config.fresh and rec_path.exists():
        rec_path.unlink()
    done = _load_records(rec_path)
    sample_ids = {_name(s, root) for s in select_samples(samples, config.samples)} if config.samples > 0 else set()
    crops: dict[str, dict[str, np.ndarray]] = {}
    records: list[dict] = []
    total = len(samples) * (1 + sum(len(c.settings) for c in codecs))
    bar = tqdm(total=total, desc="evaluating", unit="step", disable=not config.progress)
    with rec_path.open("a") as log:
        for sample in samples:
            name = _name(sample, root)
            img = None
            orig_key = _key(name, "original", classifier_identity(classifier), "-")
            base = done.get(orig_key)
            if base is None or name in sample_ids:
                img = read_image(sample.path)
            if base is None:
                pred = classifier.predict(img)
                base = {
                    "key": orig_key, "image": name, "label": sample.label, "codec": "original", "setting": "-",
                    "height": img.height, "width": img.width, "bits_stored": img.bits_stored,
                    "prob": pred.probability, "pred": pred.label,
                }
                _append(log, base)
            records.append(base)
            if name in sample_ids:
                crops.setdefault(name, {})["original"] = _crop(img)
            bar.update(1)
            for codec in codecs:
                for setting in codec.settings:
                    key = _key(name, codec.name, codec.identity, setting.label)
                    rec = done.get(key)
                    cached_crop = _load_crop(out, key) if name in sample_ids else None
                    if rec is None or (name in sample_ids and cached_crop is None):
                        if img is None:
                            img = read_image(sample.path)
                        rec_new, recon = _measure(img, codec, setting, classifier, psnr, ms_ssim)
                        if rec is None:
                            rec = {"key": key, "image": name, "label": sample.label, **rec_new,
                                   "prob_original": base["prob"], "pred_original": base["pred"]}
                            _append(log, rec)
                        if name in sample_ids:
                            cached_crop = _save_crop(out, key, _crop(recon))
                    if cached_crop is not None:
                        crops[name][f"{codec.name}|{setting.label}"] = cached_crop
                    records.append(rec)
                    bar.set_postfix_str(f"{codec.name} {setting.label}", refresh=False)
                    bar.update(1)
    bar.close()
    return {"root": recorded_path(root), "samples": samples, "records": records, "crops": crops}


def classifier_identity(classifier) -> str:
    info = getattr(classifier, "info", {}) or {}
    return f"clf:{info.get('selected_epoch', '')}:{info.get('seconds', '')}:{getattr(classifier, 'size', '')}"


def _measure(img: Image, codec: CodecUnderTest, setting: Setting, classifier, psnr, ms_ssim) -> tuple[dict, Image]:
    t0 = time.perf_counter()
    payload = codec.compress(img, setting)
    t1 = time.perf_counter()
    recon = codec.decompress(payload)
    t2 = time.perf_counter()
    if recon.shape != img.shape:
        raise EvaluationError(f"{codec.name} {setting.label}: reconstruction is {recon.shape}, original {img.shape}")
    pred = classifier.predict(recon)
    a, b = img.pixels, recon.pixels
    bpp = 8.0 * len(payload) / (img.height * img.width)
    p = psnr(a, b, img.max_value)
    rec = {
        "codec": codec.name,
        "setting": setting.label,
        "target_bpp": setting.bpp,
        "quality": setting.quality,
        "bytes": len(payload),
        "bpp": bpp,
        "ratio": img.bits_stored / bpp,
        "psnr": None if math.isinf(p) else p,
        "ms_ssim": ms_ssim(a, b, img.max_value),
        "prob": pred.probability,
        "pred": pred.label,
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
    }
    return rec, recon


def _crop_path(out: Path, key: str) -> Path:
    import hashlib

    return out / CROP_CACHE / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npy")


def _load_crop(out: Path, key: str) -> np.ndarray | None:
    path = _crop_path(out, key)
    try:
        return np.load(path).astype(np.float32)
    except (OSError, ValueError):
        return None


def _save_crop(out: Path, key: str, crop: np.ndarray) -> np.ndarray:
    """Keep a sample crop so a resumed run can draw its panels without encoding again."""
    import io

    from radseal.io.files import atomic_write

    path = _crop_path(out, key)
    path.parent.mkdir(exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, crop.astype(np.float16))
    atomic_write(path, buf.getvalue())
    return crop


def _append(log, rec: dict) -> None:
    log.write(json.dumps(rec) + "\n")
    log.flush()


def _name(sample: Sample, root: Path) -> str:
    """The image's path relative to the data folder (how records name it)."""
    return str(sample.path.relative_to(root)) if sample.path.is_relative_to(root) else sample.path.name
