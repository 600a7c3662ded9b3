"""Training of the learned codec: resumable, data-parallel under torchrun.

* Data: random crops of the chest X-rays in ``DATA/train`` (8-bit) plus
  crops from the *left half* of the pydicom-data radiographs RG1 (15-bit)
  and RG3 (10-bit); the right halves stay unseen so that the benchmark can
  report them as held out. Every image is mapped to [0, 1] by its own
  min/max, exactly as the codec does at coding time.
* One variable-rate model: each sample in a batch draws a level (mostly the
  integer levels of the lambda table, sometimes a fractional one) and its
  loss is ``lambda * 255^2 * MSE + bpp``, divided by a running mean of that
  level's loss so that the low-rate levels are not drowned by the high ones.
* Checkpoints (model, optimizer, step, elapsed time, running means) are
  written atomically every few minutes; ``resume=True`` continues from the
  last one. Under ``torchrun`` each process trains on its own crops and
  gradients are averaged with gloo (CPU) or nccl (GPU); rank 0 writes.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from radseal.extras import require

torch = require("torch", "train", "radseal train-codec")

from radseal.codec.errors import CodecError  # noqa: E402
from radseal.codec.model import DEFAULT_LAMBDAS, CodecNet, rd_loss  # noqa: E402


@dataclass
class TrainConfig:
    data: str | None = None
    out: str = "runs/codec"
    steps: int = 100_000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    threads: int = 2
    seed: int = 0
    checkpoint_every_s: float = 180.0
    log_every: int = 50
    rg_fraction: float = 0.125
    n: int = 128
    m: int = 128
    nh: int = 64
    nz: int = 32
    lambdas: list = field(default_factory=lambda: list(DEFAULT_LAMBDAS))
    synthetic: bool = False  # tiny generated images instead of files (smoke tests)
    max_images: int | None = None


def normalize_by_range(pixels: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] by the image's own min/max (the codec's mapping)."""
    lo, hi = int(pixels.min()), int(pixels.max())
    return ((pixels.astype(np.float32) - lo) / float(max(hi - lo, 1))).astype(np.float32)


class CropSource:
    """Images held in memory (uint8/uint16 plus range) and random crops from them."""

    def __init__(self, images: list[np.ndarray], crop: int, rng: np.random.Generator):
        self.images = [im for im in images if min(im.shape) >= crop]
        if not self.images:
            raise CodecError(f"no training image is at least {crop}x{crop} pixels")
        self.ranges = [(float(im.min()), float(max(im.max() - im.min(), 1))) for im in self.images]
        areas = np.array([im.size for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.crop = crop
        self.rng = rng

    def sample(self) -> np.ndarray:
        i = self.rng.choice(len(self.images), p=self.weights)
        im = self.images[i]
        h, w = im.shape
        c = self.crop
        top = int(self.rng.integers(0, h - c + 1))
        left = int(self.rng.integers(0, w - c + 1))
        lo, span = self.ranges[i]
        x = (im[top : top + c, left : left + c].astype(np.float32) - lo) / span
        if self.rng.random() < 0.5:
            x = x[:, ::-1]
        return np.ascontiguousarray(x)


def load_training_images(cfg: TrainConfig) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(chest X-rays, pydicom-data left halves, description of the data)."""
    if cfg.synthetic:
        rng = np.random.default_rng(cfg.seed)
        yy, xx = np.mgrid[0:160, 0:160]
        ims = []
        for k in range(4):
            base = 120 + 80 * np.sin(xx / (9 + k)) * np.cos(yy / (13 + k))
            ims.append(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))
        return ims, [], {"synthetic": True}
    from radseal.io import read_image
    from radseal.io.dataset import list_samples, resolve_data_dir
    from radseal.io.samples import sample_path

    root = resolve_data_dir(cfg.data)
    samples = list_samples(root, "train")
    if cfg.max_images:
        samples = samples[: cfg.max_images]
    cxr = [read_image(s.path).pixels for s in samples]
    rg = []
    for name in ("RG1", "RG3"):
        px = read_image(sample_path(name)).pixels
        rg.append(px[:, : px.shape[1] // 2])  # right half held out
    info = {
        "cxr_dir": str(root),
        "cxr_images": len(cxr),
        "cxr_split": "train",
        "pydicom_data": "RG1, RG3: left half (columns < W/2) only; right halves held out",
    }
    return cxr, rg, info


class Batcher:
    def __init__(self, cxr: CropSource, rg: CropSource | None, cfg: TrainConfig, rng: np.random.Generator):
        self.cxr, self.rg, self.cfg, self.rng = cxr, rg, cfg, rng

    def next(self) -> torch.Tensor:
        xs = []
        for _ in range(self.cfg.batch):
            src = self.rg if (self.rg is not None and self.rng.random() < self.cfg.rg_fraction) else self.cxr
            xs.append(src.sample())
        return torch.from_numpy(np.stack(xs)[:, None])


def sample_levels(k: int, batch: int, rng: np.random.Generator) -> torch.Tensor:
    levels = rng.integers(0, k, size=batch).astype(np.float32)
    frac = rng.random(batch) < 0.25
    levels[frac] = rng.uniform(0, k - 1, size=int(frac.sum()))
    return torch.from_numpy(levels)


def level_lambdas(lambdas: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Geometric interpolation of the lambda table at fractional levels."""
    lo = levels.floor().long().clamp(max=lambdas.numel() - 2)
    t = levels - lo.float()
    return torch.exp(torch.log(lambdas[lo]) * (1 - t) + torch.log(lambdas[lo + 1]) * t)


def atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_net(cfg: TrainConfig) -> CodecNet:
    return CodecNet(n=cfg.n, m=cfg.m, nh=cfg.nh, nz=cfg.nz, lambdas=cfg.lambdas)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or continue training) and return the path of the last checkpoint."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise CodecError(f"{ckpt_path}: no checkpoint to resume from")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = TrainConfig(**state["config"])
        # Architecture comes from the checkpoint; schedule options from this call.
        for key in ("n", "m", "nh", "nz", "lambdas"):
            setattr(cfg, key, getattr(saved, key))
        if cfg.data is None:
            cfg.data = saved.data
    torch.set_num_threads(max(1, cfg.threads))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    start_step = int(state["step"]) if state else 0
    rng = np.random.default_rng([cfg.seed, rank, start_step])
    torch.manual_seed(cfg.seed * 1000 + rank + start_step)

    cxr, rg, data_info = load_training_images(cfg)
    batcher = Batcher(CropSource(cxr, cfg.crop, rng), CropSource(rg, cfg.crop, rng) if rg else None, cfg, rng)

    net = build_net(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    k = net.num_levels
    level_ema = torch.ones(k)
    elapsed = 0.0
    if state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for g in opt.param_groups:
            g["lr"] = cfg.lr
        level_ema = state.get("level_ema", level_ema)
        elapsed = float(state.get("elapsed_s", 0.0))
    model = net
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        # One line per (re)start: the schedule behind the weights, for the record next to them.
        phase = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_step": start_step, "world": world, **asdict(cfg)}
        with open(out / "phases.jsonl", "a") as f:
            f.write(json.dumps(phase) + "\n")
    log_path = out / "train.log"
    history = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    t_ckpt = time.time()
    t_log = time.time()
    steps_since_log = 0
    step = start_step
    lambdas = net.lambdas.cpu()
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start_step, desc="train-codec", unit="step", mininterval=5)

    def save(final: bool = False) -> None:
        if rank != 0:
            return
        snapshot = {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "elapsed_s": elapsed + (time.time() - t_run),
            "level_ema": level_ema,
            "config": asdict(cfg),
            "data": data_info,
            "world_size": world,
        }
        atomic_torch_save(snapshot, ckpt_path)

    t_run = time.time()
    t_archive = t_run
    stop = {"now": False}

    def request_stop(signum, frame):  # SIGTERM/SIGINT: finish the step, checkpoint, exit
        stop["now"] = True

    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    while step < cfg.steps and not stop["now"]:
        x = batcher.next().to(device)
        levels = sample_levels(k, cfg.batch, rng)
        lam = level_lambdas(lambdas, levels)
        out_d = model(x, levels.to(device))
        terms = rd_loss(out_d, x, lam.to(device))
        per = lam.to(device) * 255.0**2 * terms["mse"] + terms["bpp"]
        # Recompute the weighted loss with gradients (rd_loss returns detached parts).
        mse_g = ((out_d["x_hat"] - x) ** 2).flatten(1).mean(1)
        bits = -torch.log2(out_d["y_lik"]).flatten(1).sum(1) - torch.log2(out_d["z_lik"]).flatten(1).sum(1)
        bpp_g = bits / (x.shape[-1] * x.shape[-2])
        nearest = levels.round().long()
        weight = (1.0 / level_ema[nearest]).to(device)
        loss = ((lam.to(device) * 255.0**2 * mse_g + bpp_g) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        # A rare numerical blow-up: skip the update rather than poison the weights. The norm is
        # taken after DDP's all-reduce, so every process makes the same decision.
        if torch.isfinite(grad_norm):
            opt.step()
        with torch.no_grad():
            per_cpu = per.detach().cpu()
            for i in range(cfg.batch):
                j = int(nearest[i])
                level_ema[j] = 0.99 * level_ema[j] + 0.01 * float(per_cpu[i])
        step += 1
        steps_since_log += 1
        history["loss"] += float(terms["loss"].detach())
        history["bpp"] += float(terms["bpp"].mean())
        history["psnr"] += float((-10 * torch.log10(terms["mse"].clamp_min(1e-10))).mean())
        history["n"] += 1
        if bar is not None:
            bar.update(1)
        if rank == 0 and step % cfg.log_every == 0:
            now = time.time()
            n = max(history["n"], 1)
            record = {
                "step": step,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "loss": round(history["loss"] / n, 4),
                "bpp": round(history["bpp"] / n, 4),
                "psnr": round(history["psnr"] / n, 2),
                "steps_per_s": round(steps_since_log / (now - t_log), 3),
                "crop": cfg.crop,
                "batch": cfg.batch,
                "world": world,
                "level_loss": [round(float(v), 3) for v in level_ema],
            }
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            history = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
            t_log, steps_since_log = now, 0
        if time.time() - t_ckpt > cfg.checkpoint_every_s:
            save()
            t_ckpt = time.time()
            if rank == 0 and time.time() - t_archive > 1800:
                import shutil

                shutil.copyfile(ckpt_path, out / f"step{step:07d}.pt")
                t_archive = time.time()
    save(final=True)
    if bar is not None:
        bar.close()
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return ckpt_path


def bpp_of(lik: torch.Tensor, pixels: int) -> float:
    return float(-torch.log2(lik).sum() / pixels)


def psnr_from_mse(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))
