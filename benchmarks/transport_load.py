"""Load benchmark: concurrent senders against one receiver, on loopback only.

For each concurrency level C, C sender threads (each with its own durable
outbox and HTTP connection, as C devices would have) deliver pre-sealed
messages to one receiver process (uvicorn, folder store, SQLite index).
Latency is the time from the start of a delivery to a checked receipt, the
outbox update included; throughput is messages receipted per second of wall
time. Sealing happens before the clock starts. Results:
docs/results/transport_load.{json,md}.

    nice -n 5 .venv/bin/python benchmarks/transport_load.py
    nice -n 5 .venv/bin/python benchmarks/transport_load.py --codec pretrained --messages 24 --concurrency 1 4 --name transport_load_codec
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from radseal.io.files import atomic_write
from radseal.pipeline import seal_image
from radseal.seal import DeviceKey, ReceiverKey, parse_header, save_private_key, save_public_key
from radseal.transport.drill import ReceiverProcess, drill_images, free_port, load_codec
from radseal.transport.index import ReceiptIndex
from radseal.transport.outbox import Outbox
from radseal.transport.sender import RetryPolicy, Sender

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_level(work: Path, url: str, sealed: list[bytes], concurrency: int) -> dict:
    outboxes = [Outbox(work / f"c{concurrency}-outbox{i}") for i in range(concurrency)]
    for i, data in enumerate(sealed):
        outboxes[i % concurrency].add(parse_header(data).message_id, data, f"load-{i}", f"load-{concurrency}-{i}")
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)

    def device(outbox: Outbox, k: int) -> None:
        entries = outbox.pending()
        with Sender(url, outbox, retry=RetryPolicy(base=0.05, cap=1.0, max_attempts=20), timeout=120, rng=random.Random(k)) as sender:
            barrier.wait()
            for entry in entries:
                t0 = time.perf_counter()
                try:
                    sender.deliver(entry)
                except Exception as exc:  # recorded, the benchmark reports it
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=device, args=(ob, k)) for k, ob in enumerate(outboxes)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = [1000 * v for v in latencies]
    return {
        "concurrency": concurrency,
        "messages": len(sealed),
        "receipted": len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
        "wall_s": round(wall, 3),
        "messages_per_s": round(len(latencies) / wall, 2),
        "sealed_mb_per_s": round(sum(len(d) for d in sealed) / wall / 1e6, 3),
        "latency_ms": {
            "p50": round(percentile(ms, 50), 1),
            "p90": round(percentile(ms, 90), 1),
            "p99": round(percentile(ms, 99), 1),
            "max": round(max(ms), 1),
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--messages", type=int, default=240, help="messages per concurrency level")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (crops of RG3, 10-bit)")
    p.add_argument("--codec", choices=("bitdrop", "pretrained"), default="bitdrop")
    p.add_argument("--name", default="transport_load")
    args = p.parse_args()
    command = "nice -n 5 .venv/bin/python benchmarks/transport_load.py" + "".join(f" {a}" for a in sys.argv[1:])
    codec = load_codec(args.codec)
    receiver_key, device_key = ReceiverKey.generate(), DeviceKey.generate()
    levels = []
    with tempfile.TemporaryDirectory(prefix="radseal-load-") as tmp:
        work = Path(tmp)
        save_private_key(receiver_key, work / "receiver.key")
        (work / "trusted").mkdir()
        save_public_key(device_key.public_key(), work / "trusted" / "device.pub")
        port = free_port()
        receiver = ReceiverProcess(
            ["--key", str(work / "receiver.key"), "--trust", str(work / "trusted"), "--store", str(work / "store"),
             "--index", str(work / "state" / "index.sqlite"), "--codec", args.codec],
            port,
            work / "receiver.log",
        )
        receiver.start(timeout=120)
        try:
            for concurrency in args.concurrency:
                images = [img for img in drill_images(args.messages, size=args.size, seed=concurrency) if img.source is not None]
                images = (images * 2)[: args.messages]
                sealed = [seal_image(img, receiver_key.public_key(), device_key, codec=codec).data for img in images]
                print(f"concurrency {concurrency}: {len(sealed)} messages of {np.mean([len(d) for d in sealed]):.0f} bytes", flush=True)
                level = run_level(work, receiver.url, sealed, concurrency)
                print(json.dumps(level), flush=True)
                levels.append(level)
        finally:
            receiver.stop()
        stored = ReceiptIndex(work / "state" / "index.sqlite").count()
    record = {
        "command": command,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "codec": args.codec,
        "image": f"{args.size}x{args.size} crops of RG3 (10-bit CR) with the DICOM header",
        "receiver": "one uvicorn process, folder store, SQLite index, loopback HTTP (no TLS)",
        "stored_in_index": stored,
        "levels": levels,
    }
    out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{args.name}.json", (json.dumps(record, indent=2) + "\n").encode())
    md = [
        f"# Transport load benchmark ({args.codec} codec)",
        "",
        f"Command: `{command}` (Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other jobs, "
        f"load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"Loopback only. {record['receiver'][0].upper() + record['receiver'][1:]}; {record['image']}. Each concurrent sender is a thread with its own "
        "outbox (SQLite, fsync'd) and HTTP connection; latency runs from the start of a delivery to a checked "
        "receipt with the outbox updated. The receiver's path per message: verify + open, archive (fsync), decode, "
        "derived DICOM written (fsync), index row (fsync).",
        "",
        "| senders | messages | receipted | wall (s) | messages/s | sealed MB/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {lv['concurrency']} | {lv['messages']} | {lv['receipted']} | {lv['wall_s']} | {lv['messages_per_s']} | "
            f"{lv['sealed_mb_per_s']} | {lv['latency_ms']['p50']} | {lv['latency_ms']['p90']} | "
            f"{lv['latency_ms']['p99']} | {lv['latency_ms']['max']} |"
            for lv in levels
        ],
        "",
        f"Messages stored in the index at the end: {stored} (all levels together).",
        "",
    ]
    atomic_write(out / f"{args.name}.md", "\n".join(md).encode())
    print("\n".join(md))
    return 0 if all(lv["error_count"] == 0 for lv in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
