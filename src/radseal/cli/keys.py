"""``radseal keygen | encode | decode | inspect``: keys and sealed containers.

A thin shell over :mod:`radseal.seal` and :mod:`radseal.pipeline`: parse
arguments, call the library, print one short report. Every file is written
through ``atomic_write``; errors end as one ``radseal: error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from radseal.errors import RadsealError
from radseal.io.files import check_output, read_regular_file
from radseal.seal.errors import FormatError, KeyFileError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_CONTAINER_FILE_BYTES = 300 << 20
MAX_PASSPHRASE_FILE_BYTES = 4096


class UsageError(RadsealError):
    """An argument combination or value the command cannot use."""


def _iso(ts: int) -> str:
    try:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    from radseal.io.files import read_regular_file  # imported here: radseal.io loads pydicom

    text = read_regular_file(path, MAX_PASSPHRASE_FILE_BYTES, "passphrase file", KeyFileError)
    secret = text.rstrip(b"\r\n")
    if not secret:
        raise KeyFileError(f"{path}: passphrase file is empty")
    return secret


def _read_container(path: str) -> bytes:
    from radseal.io.files import read_regular_file

    return read_regular_file(path, MAX_CONTAINER_FILE_BYTES, "container file", FormatError)


def _with_file(exc: RadsealError, path: str) -> RadsealError:
    """The same error type with the file name in front of its message."""
    return type(exc)(f"{path}: {exc}")


# --------------------------------------------------------------------------- keygen


def _keygen(args: argparse.Namespace) -> int:
    from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key

    if not _NAME.match(args.name):
        raise UsageError(f"key name {args.name!r}: use letters, digits, '.', '_' or '-' (no folders; --out sets the folder)")
    if args.role == "device" and args.kem is not None:
        raise UsageError("--kem applies to receiver keys only (device keys are Ed25519)")
    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"{out}: {'is a file, not a folder' if out.exists() else 'output folder does not exist'}")
    private_path, public_path = out / f"{args.name}.key", out / f"{args.name}.pub"
    for p in (private_path, public_path):
        check_output(p, inputs=[args.passphrase_file], force=True)
        if p.exists() and not args.force:
            raise UsageError(f"{p}: already exists; a lost private key loses every image sealed to it (use --force to replace)")
    passphrase = _passphrase(args.passphrase_file)
    key = ReceiverKey.generate(args.kem or "x25519") if args.role == "receiver" else DeviceKey.generate()
    save_private_key(key, private_path, passphrase)
    try:
        save_public_key(key.public_key(), public_path)
    except RadsealError:
        private_path.unlink(missing_ok=True)  # never leave half a key pair
        raise
    algorithm = f"KEM {key.kem}" if args.role == "receiver" else "Ed25519"
    protected = "passphrase-protected, " if passphrase else ""
    print(f"{args.role} key {args.name}: {algorithm}, key id {key.key_id}")
    print(f"  private: {private_path} ({protected}mode 0600; keep it secret)")
    print(f"  public:  {public_path} (give it to {'devices that send to this receiver' if args.role == 'receiver' else 'receivers that trust this device'})")
    return 0


# --------------------------------------------------------------------------- encode


def _encode(args: argparse.Namespace) -> int:
    from radseal.io import atomic_write, read_image
    from radseal.io.derived import identifier_notes
    from radseal.pipeline import seal_image
    from radseal.seal import load_device_key, load_receiver_public_key

    if args.quality is not None and args.bpp is not None:
        raise UsageError("give --quality or --bpp, not both")
    max_error = 0 if args.lossless else args.max_error
    if max_error is not None and (args.quality is not None or args.bpp is not None or args.preserve_diagnosis):
        raise UsageError("--lossless/--max-error choose the fidelity themselves; drop --quality/--bpp/--preserve-diagnosis")
    if args.lossless and args.max_error is not None:
        raise UsageError("give --lossless or --max-error, not both")
    if max_error is not None and not 0 <= max_error <= 65535:
        raise UsageError(f"--max-error must be 0..65535 (stored pixel values), got {max_error}")
    out = Path(args.output)
    if out.suffix.lower() != ".rsl":
        raise UsageError(f"{out}: the output of encode is a sealed container; name it *.rsl")
    check_output(out, inputs=[args.input, args.to, args.sign, args.passphrase_file], force=args.force)
    recipient = load_receiver_public_key(args.to)
    signer = load_device_key(args.sign, _passphrase(args.passphrase_file))
    img = read_image(args.input)
    for note in identifier_notes(img.source):
        print(f"radseal: note: {args.input}: {note}", file=sys.stderr)
    quality = args.quality
    if getattr(args, "preserve_diagnosis", False):
        quality = _preserve_diagnosis(args, img)
    if args.insecure_paper_cipher:
        print(
            "radseal: WARNING: --insecure-paper-cipher writes suite 0xF0: the body travels WITHOUT "
            "encryption (the paper's scheme gives no confidentiality); for reproduction only",
            file=sys.stderr,
        )
    sealed = seal_image(img, recipient, signer, quality=quality, bpp=args.bpp, max_error=max_error,
                        insecure_paper_cipher=args.insecure_paper_cipher)
    data = sealed.data
    try:
        atomic_write(out, data, replace=args.force)
    except OSError as exc:
        raise RadsealError(f"{out}: cannot write ({exc.strerror or exc})") from None
    st = sealed.stats
    print(
        f"{args.input} -> {out}: {len(data)} bytes sealed ({st['payload_bytes']} payload, "
        f"{img.width}x{img.height} at {img.bits_stored} bits, {img.raw_bytes} raw bytes, ratio {img.raw_bytes / len(data):.1f}:1)"
    )
    stream = st.get("stream") or {}
    print(f"  mode: {_stream_mode_text(stream) if stream.get('mode') in ('lossy', 'lossless', 'max_error') else _mode_text(max_error)}"
          + ("" if max_error is not None or quality is not None or args.bpp is not None
             else " (the default rate: at least JPEG 2000's PSNR at 30:1)"))
    print(f"  for receiver {recipient.key_id} ({recipient.kem}), signed by device {signer.key_id}")
    print(f"  compress {st['compress_s'] * 1e3:.0f} ms, seal {st['seal_s'] * 1e3:.1f} ms")
    return 0


def _mode_text(max_error) -> str:
    if max_error is None:
        return "lossy (learned codec)"
    return "lossless" if max_error == 0 else f"near-lossless, every pixel within {max_error} of the original"


def _stream_mode_text(stream: dict) -> str:
    if stream["mode"] == "lossy":
        return f"lossy, quality {stream['quality']} ({stream['model']})"
    return _mode_text(stream["max_error"])


def _preserve_diagnosis(args: argparse.Namespace, img) -> int:
    """The lowest codec quality that keeps the classifier's diagnosis (radseal.diagnosis.preserve)."""
    from radseal.diagnosis.classifier import Classifier
    from radseal.diagnosis.preserve import choose_quality, describe
    from radseal.pipeline import default_codec

    if args.quality is not None or args.bpp is not None:
        raise UsageError("--preserve-diagnosis chooses the quality itself; drop --quality/--bpp")
    choice = choose_quality(img, default_codec(), Classifier.pretrained(), prob_tolerance=args.prob_tolerance, psnr_floor=args.psnr_floor)
    for line in describe(choice):
        print(line)
    if not choice.passed:
        print("radseal: WARNING: no quality level keeps the diagnosis; sending the highest", file=sys.stderr)
    return choice.quality


# --------------------------------------------------------------------------- decode


def _decode(args: argparse.Namespace) -> int:
    from radseal.io import write_image
    from radseal.io.dicom import write_dicom
    from radseal.io.derived import derived_dataset, message_uid_seed
    from radseal.pipeline import DEFAULT_MAX_PIXELS, open_image
    from radseal.seal import load_receiver_key, load_trusted

    if args.max_pixels is not None and args.max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    if args.output is not None and Path(args.output).suffix.lower() not in (".dcm", ".dicom", ".png"):
        raise UsageError(f"{args.output}: decode writes DICOM (.dcm) or PNG (.png)")
    inputs = [args.input, args.passphrase_file, *args.key, *args.trust]
    if args.output is not None:
        check_output(args.output, inputs=inputs, force=args.force)
    passphrase = _passphrase(args.passphrase_file)
    keys = [load_receiver_key(k, passphrase) for k in args.key]
    trusted = load_trusted(args.trust)
    data = _read_container(args.input)
    try:
        opened = open_image(data, keys, trusted, allow_insecure_paper_cipher=args.insecure_paper_cipher,
                            max_pixels=args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS)
    except RadsealError as exc:
        raise _with_file(exc, args.input) from None
    if args.output is not None:
        out = Path(args.output)
    else:
        # Never IN.dcm: that is usually the original image the container was made from.
        dicom_out = opened.dicom_header is not None or opened.image.signed  # PNG cannot hold signed values
        out = default_decode_output(args.input, ".dcm" if dicom_out else ".png")
        check_output(out, inputs=inputs, force=args.force, hint="pass -o NAME to choose another name, or --force to replace it")
    notes: list[str] = []
    if out.suffix.lower() in (".dcm", ".dicom"):
        from radseal.pipeline import describe_payload

        # The model named by the authenticated stream itself (a lossless stream is the native-depth
        # coder's, whatever codec the sender ran), else the sender's codec name.
        codec_name = str(describe_payload(opened.payload).get("model") or opened.metadata.get("codec", {}).get("name", "unknown"))
        ds = derived_dataset(opened.image, opened.dicom_header, payload_bytes=max(1, len(opened.payload)),
                             model_id=codec_name, uid_seed=message_uid_seed(opened.header.sender_key_id, opened.header.message_id), notes=notes)
        write_dicom(ds, out, replace=args.force)
    else:
        write_image(opened.image, out, replace=args.force)
    for note in notes:
        print(f"radseal: note: {note}", file=sys.stderr)
    h, img = opened.header, opened.image
    print(f"{args.input}: authentic, from trusted device {h.sender_key_id}, message {h.message_id}, created {_iso(h.created)}")
    dicom = "with its DICOM header" if opened.dicom_header is not None else "no DICOM header"
    print(f"  wrote {out}: {img.width}x{img.height} at {img.bits_stored} bits, {img.photometric} ({dicom})")
    from radseal.pipeline import describe_payload

    stream = describe_payload(opened.payload)
    print(f"  mode: {_stream_mode_text(stream) if stream.get('mode') == 'lossy' else _mode_text(img.metadata.get('codec_max_error'))}")
    return 0


def default_decode_output(container: str | Path, suffix: str) -> Path:
    """``X.rsl`` decodes to ``X-decoded.dcm`` (or .png) beside it, never to ``X.dcm``."""
    path = Path(container)
    return path.with_name(f"{path.stem}-decoded{suffix}")


# --------------------------------------------------------------------------- inspect


def _inspect(args: argparse.Namespace) -> int:
    from radseal.seal import parse_header

    if args.key and not args.trust:
        raise UsageError("inspect --key needs --trust: the device signature is checked before anything is opened")
    if (args.trust or args.passphrase_file) and not args.key:
        raise UsageError("--trust and --passphrase-file go with --key (without keys inspect shows the clear header only)")
    data = _read_container(args.input)
    try:
        header = parse_header(data)
    except RadsealError as exc:
        raise _with_file(exc, args.input) from None
    opened = _inspect_open(args, data) if args.key else None
    facts = header.to_dict()
    facts["created_utc"] = _iso(header.created)
    facts["file_bytes"] = len(data)
    facts["verified"] = opened is not None
    if opened is not None:
        facts["image"] = opened["image"]
        facts["codec"] = opened["codec"]
        facts["stream"] = opened["stream"]
        facts["dicom_header"] = opened["dicom"]
    else:
        facts["stream"] = "sealed"
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    state = ("verified: signed by a trusted device, decrypted with the receiver key" if opened is not None
             else "not verified: inspect needs no keys")
    print(f"{args.input}: radseal container, format version {header.version}, {len(data)} bytes ({state})")
    print(f"  suite:          0x{header.suite_id:02x} {header.suite}{'  <-- INSECURE' if header.insecure else ''}")
    print(f"  recipient key:  {header.recipient_key_id}")
    print(f"  sender key:     {header.sender_key_id}")
    print(f"  message id:     {header.message_id}")
    print(f"  created:        {facts['created_utc']} ({header.created})")
    print(f"  ciphertext:     {header.ciphertext_length} bytes")
    if opened is None:
        print("  codec mode:     sealed (inside the encryption; --key and --trust open it)")
        return 0
    for line in stream_lines(opened["stream"], opened["image"], opened["codec"]):
        print(f"  {line}")
    print(f"  DICOM header:   {'carried (inside the encryption)' if opened['dicom'] else 'none'}")
    return 0


def _inspect_open(args: argparse.Namespace, data: bytes) -> dict:
    from radseal.pipeline import describe_sealed
    from radseal.seal import load_receiver_key, load_trusted

    passphrase = _passphrase(args.passphrase_file)
    keys = [load_receiver_key(k, passphrase) for k in args.key]
    trusted = load_trusted(args.trust)
    try:
        return describe_sealed(data, keys, trusted, allow_insecure_paper_cipher=args.insecure_paper_cipher)
    except RadsealError as exc:
        raise _with_file(exc, args.input) from None


def stream_lines(stream: dict, image: dict, codec_name: str) -> list[str]:
    """The codec facts of an opened container, one per line (radseal.pipeline.describe_payload)."""
    from radseal.codec.default_rate import bits_allocated

    mode = stream.get("mode")
    if mode == "unknown":
        return [f"codec:          {codec_name} (not a radseal codec stream; mode unknown)",
                f"payload:        {stream['payload_bytes']} bytes"]
    pixels = max(stream["rows"] * stream["columns"], 1)
    stored = pixels * bits_allocated(stream["bits_stored"]) / 8
    rate = f"{stream['bpp']:.3f} bpp, {stored / max(stream['payload_bytes'], 1):.1f}:1 of the stored size"
    if mode == "lossless":
        text = "lossless (decodes to exactly the stored values)"
    elif mode == "max_error":
        text = f"near-lossless, every pixel within {stream['max_error']} stored values of the original"
    else:
        text = f"lossy, quality {stream['quality']}"
    return [
        f"codec model:    {stream['model']}",
        f"mode:           {text}",
        f"rate:           {rate} ({stream['payload_bytes']} bytes of codec stream)",
        f"image:          {stream['columns']}x{stream['rows']} (width x height), {stream['bits_stored']} bits stored, "
        f"{stream['photometric']}{', signed' if stream['signed'] else ''}",
    ]


# --------------------------------------------------------------------------- parsers


def register(sub) -> None:
    from radseal.cli import bpp_help, quality_help

    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "keygen",
        help="make a receiver (decryption) or device (signing) key pair",
        description=(
            "Make a key pair: NAME.key (private, file mode 0600, optionally passphrase-protected) "
            "and NAME.pub (public). A receiver key decrypts (HPKE KEM X25519, or the hybrid "
            "post-quantum ML-KEM-768+X25519); a device key signs (Ed25519). Key ids are "
            "fingerprints of the public keys. File formats: docs/format.md."
        ),
        epilog=(
            "examples:\n"
            "  radseal keygen receiver hospital --out keys/\n"
            "  radseal keygen receiver archive --kem mlkem768-x25519 --passphrase-file pw.txt\n"
            "  radseal keygen device xray-unit-7 --out keys/"
        ),
        formatter_class=raw,
    )
    p.add_argument("role", choices=("receiver", "device"), help="receiver: decrypts; device: signs")
    p.add_argument("name", metavar="NAME", help="file stem of the key pair (letters, digits, . _ -)")
    p.add_argument("--kem", choices=("x25519", "mlkem768-x25519"), default=None,
                   help="receiver KEM (default x25519; mlkem768-x25519 resists harvest-now-decrypt-later)")
    p.add_argument("--out", default=".", metavar="DIR", help="folder for the two files (default: current folder)")
    p.add_argument("--passphrase-file", metavar="F", help="protect the private key with the passphrase in F (first line)")
    p.add_argument("--force", action="store_true", help="replace existing key files of that name")
    p.set_defaults(func=_keygen)

    p = sub.add_parser(
        "encode",
        help="compress an image and seal it for one receiver",
        description=(
            "Read a radiograph (DICOM, PNG, JPEG, TIFF), compress it with the learned codec, "
            "seal it for the receiver (HPKE) and sign it with the device key (Ed25519). "
            "The DICOM header, patient data included, travels inside the encryption; the clear "
            "header holds only routing facts."
        ),
        epilog=(
            "examples:\n"
            "  radseal encode chest.dcm --to keys/hospital.pub --sign keys/xray-unit-7.key -o chest.rsl\n"
            "  radseal encode chest.png --to keys/hospital.pub --sign keys/xray-unit-7.key --bpp 0.3 -o chest.rsl\n"
            "  radseal encode chest.dcm --to keys/hospital.pub --sign keys/xray-unit-7.key --preserve-diagnosis -o chest.rsl"
        ),
        formatter_class=raw,
    )
    p.add_argument("input", metavar="IN", help="image file")
    p.add_argument("--to", required=True, metavar="RECEIVER.pub", help="receiver public key")
    p.add_argument("--sign", required=True, metavar="DEVICE.key", help="device private key")
    p.add_argument("--passphrase-file", metavar="F", help="passphrase of the device key")
    p.add_argument("--quality", type=int, metavar="Q", help=quality_help())
    p.add_argument("--bpp", type=float, metavar="B", help=bpp_help())
    p.add_argument("--lossless", action="store_true", help="lossless: the receiver gets exactly the stored values")
    p.add_argument("--max-error", type=int, metavar="K",
                   help="near-lossless: every pixel within K stored values of the original (0 = lossless)")
    p.add_argument("--preserve-diagnosis", action="store_true",
                   help="choose the lowest quality whose reconstruction keeps the pneumonia classifier's label, "
                        "keeps its probability within --prob-tolerance and stays above --psnr-floor; prints the choice and why")
    p.add_argument("--prob-tolerance", type=float, default=0.05, metavar="P",
                   help="with --preserve-diagnosis: largest allowed change of the pneumonia probability (default 0.05)")
    p.add_argument("--psnr-floor", type=float, default=38.0, metavar="DB",
                   help="with --preserve-diagnosis: lowest allowed PSNR in dB at the image's own peak (default 38)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.rsl", help="sealed container to write (never an existing file unless --force)")
    p.add_argument("--force", action="store_true", help="replace OUT.rsl if it exists (an input is never replaced)")
    p.add_argument("--insecure-paper-cipher", action="store_true",
                   help="write the paper baseline's INSECURE suite 0xF0 (no encryption; reproduction only)")
    p.set_defaults(func=_encode)

    p = sub.add_parser(
        "decode",
        help="verify, decrypt and decode a sealed container",
        description=(
            "Open a container: check that a trusted device signed it, decrypt it with the "
            "receiver key, decode the image and write it. DICOM out (patient, study and series "
            "kept, a new derived instance marked lossy) when the input was DICOM, PNG otherwise; "
            "-o OUT.png or OUT.dcm chooses explicitly. Replays are not detected here: a receiver "
            "keeps the message ids it has accepted."
        ),
        epilog=(
            "examples:\n"
            "  radseal decode chest.rsl --key keys/hospital.key --trust keys/xray-unit-7.pub -o chest.dcm\n"
            "  radseal decode chest.rsl --key new.key --key old.key --trust trusted-devices/ -o chest.png"
        ),
        formatter_class=raw,
    )
    p.add_argument("input", metavar="IN.rsl", help="sealed container")
    p.add_argument("--key", required=True, action="append", metavar="RECEIVER.key",
                   help="receiver private key (repeat for old and new keys)")
    p.add_argument("--passphrase-file", metavar="F", help="passphrase of the receiver key(s)")
    p.add_argument("--trust", required=True, action="append", metavar="DEVICE.pub|DIR",
                   help="trusted device public key, or a folder of them (repeatable)")
    p.add_argument("-o", "--output", metavar="OUT.dcm|OUT.png",
                   help="image to write (default: IN-decoded.dcm beside IN if it carried DICOM or signed pixels, "
                        "else IN-decoded.png; never an existing file unless --force)")
    p.add_argument("--force", action="store_true", help="replace the output if it exists (an input is never replaced)")
    p.add_argument("--insecure-paper-cipher", action="store_true",
                   help="accept the paper's insecure suite 0xF0 (reproduction only; no confidentiality)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images larger than N pixels (width x height) before decoding (default: 25000000)")
    p.set_defaults(func=_decode)

    p = sub.add_parser(
        "inspect",
        help="show the clear header of a container; with the receiver key, its codec mode too",
        description=(
            "Print the clear header: format version, suite, recipient and sender key ids, "
            "message id, creation time, ciphertext length. It holds no patient data and "
            "nothing is verified. The codec mode (lossless, maximum error, lossy quality) is "
            "inside the encryption: with --key and --trust, inspect verifies the signature, "
            "decrypts the container and also shows the codec model, mode, rate, image size and "
            "bits stored (nothing is decoded or written)."
        ),
        epilog=("examples:\n  radseal inspect chest.rsl --json\n"
                "  radseal inspect chest.rsl --key keys/hospital.key --trust keys/xray-unit-7.pub"),
        formatter_class=raw,
    )
    p.add_argument("input", metavar="FILE.rsl", help="sealed container")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--key", action="append", default=[], metavar="RECEIVER.key",
                   help="receiver private key: verify, decrypt and show the codec mode (repeatable)")
    p.add_argument("--passphrase-file", metavar="F", help="passphrase of the receiver key(s)")
    p.add_argument("--trust", action="append", default=[], metavar="DEVICE.pub|DIR",
                   help="trusted device public key, or a folder of them (repeatable; needed with --key)")
    p.add_argument("--insecure-paper-cipher", action="store_true",
                   help="accept the paper's insecure suite 0xF0 (reproduction only)")
    p.set_defaults(func=_inspect)
