"""Full fuzz run of the .rsl parser, open_sealed and the sealed-body parser.

Every byte of a valid container replaced by each of its 255 other values,
truncation at every length, appended bytes, swapped headers and signatures,
another recipient, an untrusted sender, a ciphertext re-signed under a new
header, a replay; plus random multi-byte corruptions, and the same single-byte
and truncation sweep over a sealed body (radseal.container). Every mutation
must end in one of the four specific errors (bodies: FormatError or a
well-formed Body). Results: docs/results/seal_fuzz.{json,md}.

    nice -n 5 .venv/bin/python benchmarks/fuzz_container.py
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import cryptography

from radseal.container import Body, pack_body, unpack_body
from radseal.io.files import atomic_write
from radseal.seal import DeviceKey, FormatError, ReceiverKey, open_sealed, seal
from radseal.seal.mutations import FuzzReport, check, fuzz_suite

COMMAND = "nice -n 5 .venv/bin/python benchmarks/fuzz_container.py"


def random_corruptions(kem: str, count: int, seed: int) -> FuzzReport:
    """1-8 random bytes overwritten at random places, and random splices."""
    rng = random.Random(seed)
    receiver, device = ReceiverKey.generate(kem), DeviceKey.generate()
    data = seal(rng.randbytes(300), receiver.public_key(), device)
    trusted = [device.public_key()]
    report = FuzzReport()
    for _ in range(count):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        if bytes(buf) == data:
            continue
        mutated = bytes(buf)
        check(report, "random multi-byte overwrite", lambda m=mutated: open_sealed(m, receiver, trusted))
    for _ in range(count // 10):
        i, j = sorted(rng.sample(range(len(data)), 2))
        mutated = data[:i] + data[j:]
        check(report, "random cut-out", lambda m=mutated: open_sealed(m, receiver, trusted))
    return report


def body_sweep(seed: int) -> tuple[Counter, list]:
    rng = random.Random(seed)
    meta = {"format": "radseal-image/1", "image": {"rows": 8, "columns": 8, "bits_stored": 12,
                                                    "photometric": "MONOCHROME2", "signed": False},
            "source": {"source_name": "x.dcm", "list": [1, 2.5, None, "é"]}}
    data = pack_body(rng.randbytes(64), meta, bytes(128) + b"DICM" + rng.randbytes(40))
    counts: Counter = Counter()
    failures = []

    def attempt(kind: str, blob: bytes) -> None:
        counts[(kind, "tried")] += 1
        try:
            result = unpack_body(blob)
        except FormatError:
            counts[(kind, "FormatError")] += 1
            return
        except Exception as exc:
            failures.append((kind, f"uncaught {type(exc).__name__}: {exc}"))
            return
        assert isinstance(result, Body)
        counts[(kind, "parsed (payload bytes are opaque; the seal authenticates them)")] += 1

    for i in range(len(data)):
        for m in range(1, 256):
            attempt("body byte flip", data[:i] + bytes([data[i] ^ m]) + data[i + 1 :])
    for n in range(len(data)):
        attempt("body truncation", data[:n])
    for n in (1, 10, 1000):
        attempt("body appended bytes", data + rng.randbytes(n))
    return counts, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=20000, help="random corruptions per suite")
    parser.add_argument("--out", default="docs/results", help="results folder")
    args = parser.parse_args()

    results = {"command": " ".join([COMMAND, *sys.argv[1:]]), "python": platform.python_version(), "cryptography": cryptography.__version__,
               "suites": {}, "body": {}}
    all_failures = []
    t_all = time.perf_counter()
    for kem in ("x25519", "mlkem768-x25519"):
        t0 = time.perf_counter()
        report = fuzz_suite(kem, masks=tuple(range(1, 256)), body_bytes=200, seed=7)
        report.add(random_corruptions(kem, args.random, seed=11))
        seconds = time.perf_counter() - t0
        results["suites"][kem] = {
            "container_bytes": 200 + {"x25519": 184, "mlkem768-x25519": 1272}[kem],
            "tried": dict(report.tried),
            "total": report.total,
            "outcomes": {f"{k} -> {e}": n for (k, e), n in sorted(report.outcomes.items())},
            "failures": report.failures[:20],
            "seconds": round(seconds, 1),
        }
        all_failures += report.failures
        print(f"{kem}: {report.total} inputs, {len(report.failures)} failures, {seconds:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    counts, failures = body_sweep(seed=5)
    results["body"] = {
        "counts": {f"{k} -> {e}": n for (k, e), n in sorted(counts.items())},
        "total": sum(n for (k, e), n in counts.items() if e == "tried"),
        "failures": failures[:20],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    all_failures += failures
    results["total_inputs"] = sum(s["total"] for s in results["suites"].values()) + results["body"]["total"]
    results["total_failures"] = len(all_failures)
    results["seconds"] = round(time.perf_counter() - t_all, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "seal_fuzz.json", (json.dumps(results, indent=2) + "\n").encode())
    atomic_write(out / "seal_fuzz.md", render(results).encode())
    print(f"{results['total_inputs']} inputs, {len(all_failures)} failures -> {out}/seal_fuzz.md", file=sys.stderr)
    return 1 if all_failures else 0


def render(r: dict) -> str:
    lines = [
        "# Fuzzing the sealed container",
        "",
        f"Command: `{r['command']}` (Python {r['python']}, cryptography {r['cryptography']}; "
        f"{r['seconds']} s in all).",
        "",
        f"**{r['total_inputs']} mutated inputs, {r['total_failures']} failures** (a failure is an input that opened, "
        "or raised anything but FormatError, AuthenticationError, UnknownSenderError or WrongRecipientError).",
        "",
    ]
    for kem, s in r["suites"].items():
        lines += [f"## Receiver KEM {kem} (container of {s['container_bytes']} bytes, 200-byte body)", "",
                  f"{s['total']} inputs in {s['seconds']} s, {len(s['failures'])} failures.", "",
                  "| mutation | outcome | inputs |", "|---|---|---:|"]
        for key, n in s["outcomes"].items():
            kind, outcome = key.split(" -> ")
            lines.append(f"| {kind} | {outcome} | {n} |")
        lines.append("")
    b = r["body"]
    lines += [f"## Sealed body parser (radseal.container.unpack_body)", "",
              f"{b['total']} inputs in {b['seconds']} s, {len(b['failures'])} failures.", "",
              "| mutation | outcome | inputs |", "|---|---|---:|"]
    for key, n in b["counts"].items():
        kind, outcome = key.split(" -> ")
        if outcome != "tried":
            lines.append(f"| {kind} | {outcome} | {n} |")
    lines += [
        "",
        "Notes:",
        "- Byte flips replace each byte of a valid container by each of its 255 other values.",
        "- A flipped sender key id gives UnknownSenderError; framing fields (magic, version, suite, flags, "
        "length) give FormatError; every other byte gives AuthenticationError, because the signature is "
        "checked before anything else. A flipped recipient key id is therefore AuthenticationError, and "
        "a genuine container for another receiver is WrongRecipientError.",
        "- A replayed container opens again and exposes the same message id: detecting replays is the "
        "receiver's job (it keeps accepted message ids).",
        "- Body mutations that still parse change only opaque bytes (payload, DICOM bytes, JSON values); "
        "inside a container the seal rejects them before the body parser ever sees them.",
        "- CI runs a bounded form (3 masks per byte): tests/test_seal_fuzz.py.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
