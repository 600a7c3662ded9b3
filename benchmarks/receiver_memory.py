"""Peak memory of a real ``radseal serve`` under concurrent garbage and concurrent valid sends.

One receiver process (shipped codec, folder store, diagnosis off) on loopback.
Phases, each after resetting the process's peak-RSS counter
(``/proc/PID/clear_refs``), each reporting the peak (``VmHWM``) and the
resident size after it (``VmRSS``) from ``/proc/PID/status``:

1. ``idle``: after start and one warm-up message (codec weights loaded);
2. ``garbage``: C concurrent uploads of B MiB of random bytes (not a
   container: bad magic);
3. ``forged``: C concurrent uploads of B MiB that start with a valid clear
   header of a trusted device for this receiver, then random bytes (passes
   every check that needs no cryptography; refused at signature verification);
4. ``valid``: C concurrent valid messages (RG1 and RG3 of pydicom-data,
   full size, shipped codec), then C more while C forged uploads run.

``--baseline-src DIR`` runs the same phases against another source tree
first (e.g. an older commit: ``git archive COMMIT src | tar -x -C DIR``),
in the same run, for comparison. Results: docs/results/receiver_memory.{json,md}.

    git archive 6e40e65 src | tar -x -C /tmp/radseal-base
    python benchmarks/receiver_memory.py --baseline-src /tmp/radseal-base/src --baseline-label "commit 6e40e65"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from radseal.seal import DeviceKey, ReceiverKey, open_sealed, save_private_key, save_public_key, seal
from radseal.seal.format import HEADER_BYTES, SIGNATURE_BYTES, Header, parse_header
from radseal.transport.drill import free_port

ROOT = Path(__file__).resolve().parent.parent


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def start(src: Path, work: Path, name: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "radseal", "serve", "--key", str(work / "receiver.key"), "--trust", str(work / "devices"),
           "--store", str(work / f"{name}-store"), "--state", str(work / f"{name}-state"), "--port", str(port),
           "--diagnosis", "off", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=open(work / f"{name}.log", "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited: {(work / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("receiver did not start")


def post_all(url: str, bodies: list[bytes]) -> list[str]:
    """POST each body from its own thread at once; the status codes (or error names)."""
    results: list[str] = [""] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = str(httpx.post(url, content=bodies[i], timeout=600).status_code)
        except httpx.HTTPError as exc:
            results[i] = type(exc).__name__

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def tally(codes: list[str]) -> str:
    return ", ".join(f"{codes.count(c)}x {c}" for c in sorted(set(codes)))


def run(src: Path, work: Path, name: str, extra: list[str], inputs: dict) -> dict:
    proc, port = start(src, work, name, extra)
    url = f"http://127.0.0.1:{port}/v1/messages"
    phases = []
    try:
        def phase(label: str, bodies: list[bytes]) -> None:
            reset_peak(proc.pid)
            t0 = time.perf_counter()
            codes = post_all(url, bodies) if bodies else []
            wall = time.perf_counter() - t0
            mem = status(proc.pid)
            phases.append({"phase": label, "requests": len(bodies), "answers": tally(codes), "wall_s": round(wall, 2),
                           "peak_rss_mib": mem["VmHWM"], "rss_after_mib": mem["VmRSS"]})
            print(f"  {name} {label}: {phases[-1]}", flush=True)

        post_all(url, [inputs["warmup"]])
        phase("idle", [])
        phase("garbage", inputs["garbage"])
        phase("forged", inputs["forged"])
        phase("valid", inputs["valid"])
        phase("valid+forged", inputs["valid2"] + inputs["forged"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"name": name, "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--mib", type=float, default=48, help="size of each garbage upload (default 48, under the 64 MiB limit)")
    parser.add_argument("--baseline-src", type=Path, help="another source tree to measure first, for comparison")
    parser.add_argument("--baseline-label", default="another source tree",
                        help="what the baseline is, for the results page (e.g. 'commit 6e40e65')")
    parser.add_argument("--name", default="receiver_memory")
    args = parser.parse_args()

    from radseal.io import read_image
    from radseal.io.samples import sample_path
    from radseal.pipeline import default_codec, seal_image

    work = Path(tempfile.mkdtemp(prefix="radseal-memory-"))
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, work / "receiver.key")
    (work / "devices").mkdir()
    save_public_key(device.public_key(), work / "devices" / "device.pub")

    codec = default_codec()
    bodies = []
    for sample in ("RG1", "RG3"):
        data = seal_image(read_image(sample_path(sample)), receiver.public_key(), device, codec=codec).data
        bodies.append(open_sealed(data, receiver, device.public_key()).body)
    c = args.concurrency
    valid = [seal(bodies[i % 2], receiver.public_key(), device) for i in range(2 * c + 1)]
    size = int(args.mib * 1024 * 1024)
    template = parse_header(valid[0])
    n = size - HEADER_BYTES - SIGNATURE_BYTES
    forged_head = Header(template.version, template.suite_id, template.recipient_key_id, template.sender_key_id,
                         template.message_id, template.created, n).encode()
    noise = os.urandom(size)
    inputs = {
        "warmup": valid[-1],
        "garbage": [noise] * c,
        "forged": [forged_head + noise[HEADER_BYTES:]] * c,
        "valid": valid[:c],
        "valid2": valid[c : 2 * c],
    }
    sizes = sorted({len(v) for v in valid})
    print(f"work folder {work}; valid messages of {sizes} bytes; garbage {size} bytes each", flush=True)

    runs = []
    if args.baseline_src:
        runs.append({**run(args.baseline_src.resolve(), work, "baseline", [], inputs), "source": args.baseline_label})
    runs.append({**run(ROOT / "src", work, "this", [], inputs), "source": "src/ next to this script"})

    command = "python benchmarks/receiver_memory.py " + " ".join(
        "<" + Path(a).name + ">" if a.startswith("/") else shlex.quote(a) for a in sys.argv[1:])
    result = {
        "command": command,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "concurrency": c,
        "garbage_bytes": size,
        "valid_message_bytes": sizes,
        "runs": runs,
    }
    out = ROOT / "docs" / "results"
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Receiver memory under concurrent garbage and valid sends",
        "",
        f"Command: `{command}` (Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other jobs, "
        f"load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"One `radseal serve` process (shipped codec, folder store, diagnosis off, default limits) on loopback. "
        f"Each phase sends {c} requests at once from {c} threads. `garbage`: {args.mib:g} MiB of random bytes each; "
        f"`forged`: {args.mib:g} MiB that begin with a valid clear header (a trusted device, this receiver's key) "
        f"followed by random bytes, refused at signature verification; `valid`: RG1 and RG3 of pydicom-data at full "
        f"size, sealed with the shipped codec ({sizes[0]} and {sizes[-1]} bytes); `valid+forged`: {c} valid and {c} "
        "forged at once. Peak is `VmHWM` of the receiver process, reset before each phase "
        "(`/proc/PID/clear_refs`); after is `VmRSS` when the phase is over."
        + (f" `baseline` is {args.baseline_label}, extracted with `git archive` into a folder given as "
           "`--baseline-src`; `this` is the source tree next to this script." if args.baseline_src else ""),
        "",
        "| receiver | phase | requests | answers | wall (s) | peak RSS (MiB) | RSS after (MiB) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        for p in r["phases"]:
            lines.append(f"| {r['name']} | {p['phase']} | {p['requests']} | {p['answers'] or '-'} | {p['wall_s']} | "
                         f"{p['peak_rss_mib']} | {p['rss_after_mib']} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
