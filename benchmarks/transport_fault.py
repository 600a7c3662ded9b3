"""Fault benchmark: 200 images while the receiver is killed and connections are cut.

Images (64x64 crops of the RG3 radiograph with its DICOM header, every fifth
one an 8-bit image without DICOM) are sealed into the outboxes of concurrent
senders and delivered through a loopback proxy that cuts connections at random
points, while the receiver process (uvicorn) is SIGKILLed and restarted at
random moments. Afterwards: every image stored exactly once, stored pixels
identical to a local decode of the sealed message, no partial files left.
Results: docs/results/transport_fault.{json,md}.

    nice -n 5 .venv/bin/python benchmarks/transport_fault.py
    nice -n 5 .venv/bin/python benchmarks/transport_fault.py --codec pretrained --images 40 --kills 4 --name transport_fault_codec
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from radseal.io.files import atomic_write
from radseal.transport.drill import run_fault_drill

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--cut", type=float, default=0.5, help="probability that the proxy cuts a connection")
    p.add_argument("--codec", choices=("bitdrop", "pretrained"), default="bitdrop")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--name", default="transport_fault", help="results file name under docs/results/")
    args = p.parse_args()
    command = "nice -n 5 .venv/bin/python benchmarks/transport_fault.py" + "".join(
        f" {a}" for a in sys.argv[1:]
    )
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="radseal-fault-") as work:
        result = run_fault_drill(
            work, args.images, senders=args.senders, kills=args.kills, cut_probability=args.cut,
            codec_name=args.codec, seed=args.seed, progress=lambda m: print(m, flush=True),
        )
    record = {
        "command": command,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "codec": args.codec,
        "cut_probability": args.cut,
        "seed": args.seed,
        "wall_s": round(time.time() - started, 1),
        "passed": result.ok,
        **dataclasses.asdict(result),
    }
    out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{args.name}.json", (json.dumps(record, indent=2) + "\n").encode())
    rows = [
        ("images sent", result.images),
        ("concurrent senders", result.senders),
        ("receiver SIGKILLs (random moments)", result.kills),
        ("receiver starts", result.receiver_starts),
        ("connections through the proxy (to a live receiver)", result.proxy_connections),
        ("connections cut inside a request / inside a response",
         f"{result.proxy_request_cuts} / {result.proxy_response_cuts}"),
        ("sender retries", result.retries),
        ("answers given as duplicates (retry after a lost receipt)", result.duplicate_answers),
        ("partial files swept at receiver start", result.partial_files_swept),
        ("delivered (receipt held by the sender)", result.delivered),
        ("index rows", result.index_rows),
        ("objects in the store", result.stored_objects),
        ("sealed messages archived", result.archived),
        ("objects stored twice", result.duplicates_in_store),
        ("stored pixels differing from a local decode", result.pixel_mismatches),
        ("partial files left after recovery", result.partial_files_after_recovery),
        ("sending time (s)", result.seconds),
    ]
    md = [
        f"# Transport fault benchmark ({args.codec} codec)",
        "",
        f"Command: `{command}` (Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other jobs; "
        f"{record['wall_s']} s in all).",
        "",
        f"**{'PASSED' if result.ok else 'FAILED'}**: " + (
            "every image stored exactly once, identical to a local decode, no partial file left."
            if result.ok else "; ".join(result.problems)
        ),
        "",
        "Loopback only: the receiver is a uvicorn child process with a folder store and the SQLite index; "
        f"the proxy cuts each connection with probability {args.cut} at a random byte of its request stream "
        "(first 3000 bytes) or its response stream (first 750 bytes); connections are kept alive, so one "
        "connection carries several messages.",
        "",
        "| quantity | value |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    atomic_write(out / f"{args.name}.md", "\n".join(md).encode())
    print("\n".join(md))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
