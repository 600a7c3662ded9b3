"""``radseal demo``: the whole path on a bundled radiograph, offline."""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

from radseal.errors import RadsealError
from radseal.io.files import check_outputs

DEFAULT_OUT = "radseal-demo"
#: What the paper baseline writes into OUT/paper (radseal.paper.roundtrip.save_outputs).
PAPER_OUTPUTS = ("original.png", "retrieved.png", "encrypted_latent.npy", "fig5.png")


class DemoError(RadsealError):
    """A demo option or output folder the demo cannot use."""


class _Outputs:
    """What this run created, so that a failed or interrupted run leaves nothing half-made behind."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.folders: list[Path] = []  # created by this run, removed again only if left empty
        self.trees: list[Path] = []  # created by this run, written by library code: removed whole

    def folder(self, path: Path) -> Path:
        if path.exists() and not path.is_dir():
            raise DemoError(f"{path}: exists and is not a folder")
        if not path.exists():
            try:
                path.mkdir()
            except OSError as exc:
                raise DemoError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from None
            self.folders.append(path)
        return path

    def file(self, path: Path) -> Path:
        if not path.exists():  # a file replaced under --force is complete (atomic write): not removed
            self.files.append(path)
        return path

    def rollback(self) -> None:
        for tree in reversed(self.trees):
            shutil.rmtree(tree, ignore_errors=True)
        for f in reversed(self.files):
            f.unlink(missing_ok=True)
        for d in reversed(self.folders):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty: holds files this run did not make


def _check_rate(args: argparse.Namespace, codec) -> dict:
    """The codec target from --quality/--bpp, checked before anything is written."""
    if args.bpp is not None:
        if not (math.isfinite(args.bpp) and args.bpp > 0):
            raise DemoError(f"--bpp must be a positive number, got {args.bpp}")
        return {"bpp": args.bpp}
    if args.quality is None:
        return {}  # the default rate: at least JPEG 2000's PSNR at 30:1 (radseal.codec.default_rate)
    if args.quality not in codec.qualities:
        raise DemoError(f"--quality must be in {codec.qualities[0]}..{codec.qualities[-1]}, got {args.quality}")
    return {"quality": args.quality}


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _preview(img, path: Path, replace: bool) -> None:
    """An 8-bit display rendering (bright = dense), whatever the stored depth."""
    import numpy as np

    from radseal.image import Image
    from radseal.io import write_png

    write_png(Image(np.round(img.display_pixels() * 255).astype(np.uint8)), path, replace=replace)


def run_demo(args: argparse.Namespace) -> int:
    outputs = _Outputs()
    try:
        return _run_demo(args, outputs)
    except BaseException:
        outputs.rollback()
        raise


def _run_demo(args: argparse.Namespace, outputs: _Outputs) -> int:
    if args.insecure_paper_cipher:  # before any work: the paper's system needs radseal[paper]
        from radseal.extras import require

        require("torch", "paper", "radseal demo --insecure-paper-cipher")
    from radseal.evaluate.metrics import max_abs_error, psnr
    from radseal.io import read_image
    from radseal.io.derived import derived_dataset, message_uid_seed
    from radseal.io.dicom import write_dicom
    from radseal.io.files import atomic_write
    from radseal.io.samples import sample_path
    from radseal.pipeline import default_codec, open_image, seal_image
    from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key

    times: dict[str, float] = {}
    t = time.perf_counter()
    codec = default_codec()
    times["load codec"] = time.perf_counter() - t
    target = _check_rate(args, codec)

    out = Path(args.out)
    names = [f"keys/{n}" for n in ("receiver.key", "receiver.pub", "device.key", "device.pub")]
    names += [f"{args.sample}{n}" for n in (".rsl", "-decoded.dcm", "-original.png", "-decoded.png")]
    if args.insecure_paper_cipher:
        names += [f"paper/{n}" for n in PAPER_OUTPUTS]
    check_outputs(out, names, force=args.force, hint="pass --force to replace them, or --out another folder")
    for parent in reversed(out.parents):
        if str(parent) not in ("", ".") and not parent.exists():
            outputs.folder(parent)
    outputs.folder(out)
    outputs.folder(out / "keys")

    t = time.perf_counter()
    source = sample_path(args.sample)
    img = read_image(source)
    times["read"] = time.perf_counter() - t
    print(f"radseal demo: {source.name} ({args.sample}), {img.width}x{img.height}, "
          f"{img.bits_stored} bits stored, {img.photometric}, {_human(img.raw_bytes)} of pixels")

    t = time.perf_counter()
    receiver = ReceiverKey.generate(kem=args.kem)
    device = DeviceKey.generate()
    save_private_key(receiver, outputs.file(out / "keys" / "receiver.key"))  # checked above: new, or --force
    save_public_key(receiver.public_key(), outputs.file(out / "keys" / "receiver.pub"))
    save_private_key(device, outputs.file(out / "keys" / "device.key"))
    save_public_key(device.public_key(), outputs.file(out / "keys" / "device.pub"))
    times["keygen"] = time.perf_counter() - t
    print(f"  keys: receiver {receiver.key_id} ({args.kem}), device {device.key_id} -> {out / 'keys'}")

    sealed = seal_image(img, receiver.public_key(), device, codec=codec, **target)
    times["compress"] = sealed.stats["compress_s"]
    times["seal"] = sealed.stats["pack_s"] + sealed.stats["seal_s"]
    rsl = out / f"{args.sample}.rsl"
    atomic_write(outputs.file(rsl), sealed.data, replace=args.force)

    t = time.perf_counter()
    opened = open_image(sealed.data, [receiver], [device.public_key()], codec=codec)
    times["open + decompress"] = time.perf_counter() - t
    recon = opened.image
    ds = derived_dataset(recon, opened.dicom_header, payload_bytes=len(opened.payload),
                         model_id=codec.model_id, uid_seed=message_uid_seed(opened.header.sender_key_id, opened.header.message_id))
    write_dicom(ds, outputs.file(out / f"{args.sample}-decoded.dcm"), replace=args.force)
    _preview(img, outputs.file(out / f"{args.sample}-original.png"), args.force)
    _preview(recon, outputs.file(out / f"{args.sample}-decoded.png"), args.force)

    pixels = img.height * img.width
    quality = psnr(img.pixels, recon.pixels, img.max_value)
    print(f"  codec {codec.model_id}: payload {_human(sealed.payload_bytes)} "
          f"({8 * sealed.payload_bytes / pixels:.3f} bpp)")
    print(f"  sealed container {rsl}: {_human(len(sealed.data))} "
          f"(ratio {img.raw_bytes / len(sealed.data):.1f}:1 against {_human(img.raw_bytes)} of pixels, "
          f"{len(sealed.data) - sealed.payload_bytes} B of header, metadata and seal)")
    print(f"  opened: authentic, from device {opened.header.sender_key_id}, message {opened.header.message_id}")
    print(f"  reconstruction: {recon.bits_stored} bits, PSNR {quality:.2f} dB (peak {img.max_value}), "
          f"max error {max_abs_error(img.pixels, recon.pixels):.0f}, {_setting(opened.payload)}")
    if not target:
        _default_rate_line(img, quality)
    print("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    print(f"  wrote {out / (args.sample + '-decoded.dcm')} (derived DICOM) and PNG previews in {out}")

    _fidelity_modes(img, codec, sealed.payload_bytes, quality, max_abs_error(img.pixels, recon.pixels))

    if args.insecure_paper_cipher:
        if not (out / "paper").exists():
            outputs.trees.append(out / "paper")
        _paper_baseline(img, out)
    else:
        print("  (add --insecure-paper-cipher to also run the 2022 paper's autoencoder and its broken cipher)")
    return 0


def _setting(payload: bytes) -> str:
    """The setting the stream names in its header (radseal.pipeline.describe_payload)."""
    from radseal.pipeline import describe_payload

    s = describe_payload(payload)
    if s["mode"] == "lossy":
        return f"lossy quality {s['quality']}"
    return {"lossless": "lossless", "max_error": f"max error {s.get('max_error')}"}.get(s["mode"], "unknown mode")


def _default_rate_line(img, radseal_psnr: float) -> None:
    """What the default rate was measured against: OpenJPEG at 30:1 of the stored size, same image."""
    from radseal.codec.default_rate import REFERENCE_RATIO, jpeg2000_at_ratio, reference_bpp
    from radseal.evaluate.metrics import psnr

    data, back = jpeg2000_at_ratio(img.pixels, img.bits_stored)
    ref = psnr(img.pixels, back, img.max_value)
    print(f"  default rate: the lowest setting with PSNR >= JPEG 2000 (OpenJPEG) at {REFERENCE_RATIO:.0f}:1 "
          f"({reference_bpp(img.bits_stored):.3f} bpp target, {8 * len(data) / (img.height * img.width):.3f} bpp, "
          f"{ref:.3f} dB): {radseal_psnr:.3f} dB")


DEMO_MAX_ERROR = 4


def _fidelity_modes(img, codec, lossy_bytes: int, lossy_psnr: float, lossy_max_error: float) -> None:
    """Lossless, a guaranteed maximum error and the lossy default on the same image, beside JPEG-LS and
    JPEG XL (through imagecodecs, in radseal[evaluate]) at the same fidelity."""
    import numpy as np

    from radseal.evaluate.metrics import max_abs_error, psnr

    pixels = img.height * img.width
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None
    px = np.ascontiguousarray(img.pixels)

    def other(encode) -> str:
        if imagecodecs is None:
            return "n/a"
        try:
            return f"{8 * len(encode()) / pixels:.3f}"
        except Exception as exc:  # noqa: BLE001 - a baseline that cannot code this image is reported, not fatal
            return f"n/a ({type(exc).__name__})"

    print("  fidelity modes on the same image (bpp; every decoded pixel checked):")
    print(f"    {'mode':<24}{'radseal':>10}{'JPEG-LS':>10}{'JPEG XL e7':>12}  quality")
    for k in (0, DEMO_MAX_ERROR):
        data = codec.compress(img, max_error=k)
        back = codec.decompress(data)
        err = max_abs_error(img.pixels, back.pixels)
        if err > k:
            raise RadsealError(f"max error {err} over the bound {k}: a codec fault, please report it")  # cannot happen by construction
        name = "lossless" if k == 0 else f"max error {k}"
        jls = other(lambda: imagecodecs.jpegls_encode(px, level=k))
        jxl = other(lambda: imagecodecs.jpegxl_encode(px, lossless=True, effort=7, bitspersample=img.bits_stored)) \
            if k == 0 else "-"
        fidelity = "exact" if k == 0 else f"PSNR {psnr(img.pixels, back.pixels, img.max_value):.2f} dB, max error {err:.0f}"
        print(f"    {name:<24}{8 * len(data) / pixels:>10.3f}{jls:>10}{jxl:>12}  {fidelity}")
    print(f"    {'lossy (default above)':<24}{8 * lossy_bytes / pixels:>10.3f}{'-':>10}{'-':>12}  "
          f"PSNR {lossy_psnr:.2f} dB, max error {lossy_max_error:.0f}")
    if imagecodecs is None:
        print("    (JPEG-LS and JPEG XL sizes need imagecodecs: pip install 'radseal[evaluate]')")


def _paper_baseline(img, out: Path) -> None:
    import sys

    from radseal.io import read_image
    from radseal.io.samples import sample_path
    from radseal.paper.autoencoder import load_autoencoder, shipped_weights_path
    from radseal.paper.roundtrip import run_roundtrip, save_outputs

    print("radseal: warning: the paper's square-add cipher is NOT encryption; one known image breaks it",
          file=sys.stderr)
    model, _ = load_autoencoder(shipped_weights_path())
    key_image = read_image(sample_path("RG3"))
    result = run_roundtrip(model, img, key_image)
    m = result.metrics()
    save_outputs(result, out / "paper", title="paper baseline")
    print(f"  paper baseline (200x200 view): sends {_human(result.sent_bytes)} of float32 latent for "
          f"{_human(result.network_input_bytes)} of 8-bit input: x{result.sent_bytes / result.network_input_bytes:.1f} "
          f"expansion, PSNR {m['psnr_db']:.2f} dB; figure in {out / 'paper'}")


def register(sub) -> None:
    from radseal.cli import bpp_help, quality_help

    p = sub.add_parser(
        "demo",
        help="compress, seal, open and decode a bundled radiograph, offline",
        description=(
            "The main job in one command, offline: read a real chest CR from pydicom-data "
            "(RG1, 15 bits), compress it with the shipped learned codec, seal it for a fresh "
            "receiver key signed by a fresh device key, open and verify it, decode it and "
            "write a derived DICOM object, printing sizes, ratio, PSNR and the time of each step."
        ),
        epilog=(
            "examples:\n"
            "  radseal demo\n"
            "  radseal demo --out radseal-demo --quality 8\n"
            "  radseal demo --sample RG3 --bpp 0.3 --kem mlkem768-x25519 --out demo-rg3"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for the outputs: keys, .rsl, DICOM, previews (default: {DEFAULT_OUT})")
    p.add_argument("--sample", default="RG1", choices=["RG1", "RG3"], help="bundled radiograph to use (default: RG1)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, default=None, help=quality_help())
    rate.add_argument("--bpp", type=float, default=None, help=bpp_help())
    p.add_argument("--kem", default="x25519", choices=["x25519", "mlkem768-x25519"],
                   help="receiver key type (default: x25519)")
    p.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo in OUT")
    p.add_argument("--insecure-paper-cipher", action="store_true",
                   help="also run the paper's autoencoder round trip with its insecure cipher, for comparison")
    p.set_defaults(func=run_demo)
