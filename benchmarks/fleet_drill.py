"""Fleet drill: images from several devices through HAProxy to several receivers sharing PostgreSQL.

Every receiver runs ``create_app`` on the same PostgreSQL receipt index (a
private cluster started by scripts/start-postgres.sh), the same state folder
(archive of sealed bytes, upload spool) and the same folder store, behind
Debian's HAProxy (config from ``radseal.transport.drill.haproxy_config``).
During the fault run, receivers are SIGKILLed at random and restarted, and
PostgreSQL is crashed (``pg_ctl stop -m immediate``) and restarted once.
Afterwards: every message in the index exactly once, one stored object per
receipt, every stored image pixel-identical to a local decode.

Then a throughput run without faults for 1, 2 and 3 receivers (same images,
same senders), messages per second.

The PACS behind the fleet is the folder store, or with ``--orthanc`` an
Orthanc (Debian orthanc + orthanc-postgresql) whose index is a database of its
own in the same PostgreSQL cluster; the receivers store through its REST API,
Orthanc is SIGKILLed and restarted once in the fault run, and the checks count
its instances (one per image, none twice; also read from its index tables in
PostgreSQL) and compare each one's pixels with a local decode. Results:
docs/results/fleet_drill.{json,md}, or ``--name`` for another file.

    nice -n 5 .venv/bin/python benchmarks/fleet_drill.py --images 300 --senders 8 --receivers 3 --kills 6
    nice -n 5 .venv/bin/python benchmarks/fleet_drill.py --orthanc --images 200 --name fleet_drill_orthanc
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from radseal.io.files import atomic_write
from radseal.transport.drill import PostgresCluster, run_fleet_drill

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--senders", type=int, default=8)
    p.add_argument("--receivers", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--throughput-images", type=int, default=200, help="images per throughput run (0: skip)")
    p.add_argument("--codec", choices=("bitdrop", "pretrained"), default="bitdrop")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--name", default="fleet_drill")
    p.add_argument("--orthanc", action="store_true",
                   help="store into Orthanc on PostgreSQL (restarted once in the fault run) instead of a folder")
    a = p.parse_args()

    folder = tempfile.mkdtemp(prefix="radseal-pg-")
    cluster = PostgresCluster(ROOT / "scripts", folder)
    cluster.start()
    admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    base = cluster.url

    def fresh_db(name: str) -> None:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}" OWNER radseal')
        cluster.url = base.rsplit("/", 1)[0] + "/" + name

    try:
        with tempfile.TemporaryDirectory() as tmp:
            fresh_db("drill")
            print(f"fault run: {a.images} images, {a.senders} senders, {a.receivers} receivers, {a.kills} kills, "
                  "PostgreSQL restarted once" + (", Orthanc on PostgreSQL restarted once" if a.orthanc else ""), flush=True)
            fault = run_fleet_drill(Path(tmp) / "fault", cluster, a.images, senders=a.senders, receivers=a.receivers,
                                    kills=a.kills, postgres_restart=True, orthanc=a.orthanc, orthanc_restart=True,
                                    codec_name=a.codec, seed=a.seed,
                                    progress=lambda m: print("  " + m, flush=True))
            print(f"  ok={fault.ok} {fault.problems}", flush=True)
            scaling = []
            if a.throughput_images:
                for n in (1, 2, 3):
                    fresh_db(f"tp{n}")
                    r = run_fleet_drill(Path(tmp) / f"tp{n}", cluster, a.throughput_images, senders=a.senders,
                                        receivers=n, kills=0, postgres_restart=False, orthanc=a.orthanc,
                                        orthanc_restart=False, codec_name=a.codec,
                                        seed=a.seed + n)
                    print(f"throughput, {n} receiver(s): {r.messages_per_second} msg/s ok={r.ok}", flush=True)
                    scaling.append({"receivers": n, "images": r.images, "seconds": r.seconds,
                                    "messages_per_second": r.messages_per_second, "ok": r.ok,
                                    "answered_by": r.answered_by, "problems": r.problems})
    finally:
        cluster.stop("fast")
        shutil.rmtree(folder, ignore_errors=True)

    out = {"command": "benchmarks/fleet_drill.py " + " ".join(sys.argv[1:]), "codec": a.codec,
           "cpus": os.cpu_count(), "python": platform.python_version(),
           "fault_run": dataclasses.asdict(fault) | {"ok": fault.ok}, "throughput": scaling}
    results = ROOT / "docs" / "results"
    atomic_write(results / f"{a.name}.json", (json.dumps(out, indent=2) + "\n").encode())
    f = fault
    pacs = (f"an Orthanc {f.orthanc_version} (Debian orthanc, with orthanc-postgresql) whose index is a database of its own in the same "
            "PostgreSQL cluster, through its REST API" if a.orthanc else "one folder store")
    lines = [
        "# Fleet drill",
        "",
        f"Command: `nice -n 5 .venv/bin/python {out['command']}` ({os.cpu_count()} CPUs, shared; codec: {a.codec}).",
        "",
        f"Fault run: {f.images} images from {f.senders} devices through HAProxy to {f.receivers} receivers sharing",
        f"a PostgreSQL receipt index, one state folder (archive) and {pacs}; "
        f"{f.kills} receiver SIGKILLs (each restarted), PostgreSQL crashed and restarted {f.postgres_restarts} time(s)"
        + (f", Orthanc SIGKILLed and restarted {f.orthanc_restarts} time(s) (and {f.orthanc_unplanned_exits} exit(s) "
           "of its own, restarted as a supervisor would)." if a.orthanc else "."),
        "",
        "| check | result |",
        "|---|---|",
        f"| delivered (sender outboxes) | {f.delivered} / {f.images} |",
        f"| index rows | {f.index_rows} |",
        f"| stored objects{' (instances in Orthanc, GET /statistics)' if a.orthanc else ''} | {f.stored_objects} |",
        *([f"| instances in Orthanc's index tables in PostgreSQL | {f.orthanc_index_instances} |"] if a.orthanc else []),
        f"| archived messages | {f.archived} |",
        f"| duplicates in the store | {f.duplicates_in_store} |",
        f"| stored images not pixel-identical to a local decode | {f.pixel_mismatches} |",
        f"| sender retries | {f.retries} |",
        f"| receiver starts (first starts, restarts, retried starts) | {f.receiver_starts} |",
        f"| starts that failed and were retried (as systemd would) | {len(f.failed_starts)} |",
        f"| \"stored\" log lines per receiver (port: count; a receiver killed between recording and logging leaves one out) | {f.answered_by} |",
        f"| wall time | {f.seconds} s |",
        f"| problems | {'none' if f.ok else '; '.join(f.problems)} |",
        "",
    ]
    if scaling:
        lines += ["Throughput without faults (same machine, same run; messages per second over the whole run):", "",
                  f"| receivers | images | seconds | messages/s | messages/s per core ({os.cpu_count()} cores) | ok |",
                  "|---|---|---|---|---|---|"]
        for s in scaling:
            lines.append(f"| {s['receivers']} | {s['images']} | {s['seconds']} | {s['messages_per_second']} | "
                         f"{round(s['messages_per_second'] / (os.cpu_count() or 1), 2)} | {s['ok']} |")
        lines += ["", f"The machine has {os.cpu_count()} CPU cores, shared here with the senders, HAProxy, PostgreSQL "
                  f"and other jobs (1-minute load average {os.getloadavg()[0]:.1f} at the end of the run), and each throughput run lasts a few seconds: "
                  "these figures are noisy. On this machine more receivers did not add throughput; with the cores "
                  "already busy, that is what to expect. Scaling on a machine with more cores was not measured."]
    if a.orthanc:
        lines += ["", "In the throughput runs the receivers store into Orthanc as well (no faults)."]
    else:
        lines += ["", "The PACS behind the fleet is the folder store here; for Orthanc on PostgreSQL see "
                  "fleet_drill_orthanc.md (`--orthanc`)."]
    atomic_write(results / f"{a.name}.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0 if fault.ok and all(s["ok"] for s in scaling) else 1


if __name__ == "__main__":
    sys.exit(main())
