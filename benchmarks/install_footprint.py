"""Install footprint: the core install (no PyTorch) against each extra, in fresh virtual environments.

Measures, in one run on this machine:

* the wheel: ``pip wheel --no-deps`` of this checkout;
* for the core and for each extra (``neural``, ``train``, ``paper``,
  ``evaluate``, ``test``): a fresh ``python -m venv``, the time of
  ``pip install WHEEL[extra]`` (dependencies from the normal index, as pip
  is configured here; pip's cache is whatever this machine has), the
  environment's size on disk (allocated blocks, MB = 10^6 bytes), whether
  torch is in it, and the packages it holds; an empty venv for reference;
* in the core environment and in the full (``test``) one, in the same run:
  cold starts (a new process each time, interpreter start included; the
  OS file cache is warm after the first) of ``radseal --help``,
  ``radseal encode`` on RG3 (pydicom-data, 1760 x 1760, 10 bits stored) and
  ``radseal serve`` until ``GET /healthz`` answers 200;
* the pneumonia classifier on 224 x 224 views: numpy (what the core runs)
  against PyTorch (the network it was trained as), in the full environment.

Writes OUT/install_footprint.{json,md}. Run:

    python benchmarks/install_footprint.py --out docs/results

(about 10 minutes on 2 cores; ``--extras core,test`` for a shorter run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("core", "neural", "train", "paper", "evaluate", "test")
TARGET_CORE_MB = 300.0
TARGET_ENCODE_S = 1.5
HEAVY = ("torch", "scipy", "scikit-learn", "matplotlib", "imagecodecs")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def disk_mb(path: Path) -> float:
    """Bytes allocated on disk under ``path`` (hard links counted once), in MB."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total / 1e6


def packages(venv: Path) -> dict[str, str]:
    out = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
    return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}


def site_packages_top(venv: Path, n: int = 8) -> list[tuple[str, float]]:
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes = [(p.name, disk_mb(p) if p.is_dir() else p.stat().st_blocks * 512 / 1e6) for p in site.iterdir()]
    return [(name, round(mb, 1)) for name, mb in sorted(sizes, key=lambda x: -x[1])[:n]]


def build_wheel(work: Path) -> Path:
    out = work / "wheel"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)])
    return next(out.glob("radseal-*.whl"))


def make_env(work: Path, wheel: Path, extra: str) -> dict:
    venv = work / f"venv-{extra}"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    spec = str(wheel) if extra == "core" else f"{wheel}[{extra}]"
    t = time.perf_counter()
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec])
    seconds = time.perf_counter() - t
    pk = packages(venv)
    return {
        "extra": extra,
        "venv": venv,
        "install_command": f"pip install {'radseal' if extra == 'core' else f'radseal[{extra}]'} (from {wheel.name})",
        "install_s": round(seconds, 1),
        "size_mb": round(disk_mb(venv), 1),
        "torch": pk.get("torch"),
        "heavy": {k: pk[k] for k in HEAVY if k in pk},
        "packages": len(pk),
        "largest": site_packages_top(venv),
    }


def summary(times: list[float]) -> dict:
    rest = times[1:] or times
    return {"first_s": round(times[0], 3), "median_s": round(statistics.median(rest), 3),
            "min_s": round(min(times), 3), "runs": len(times)}


def once(cmd, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(venv: Path, cwd: Path) -> tuple[float, bool]:
    """Seconds from starting ``radseal serve`` until /healthz answers 200 (diagnosis on, the default)."""
    port = free_port()
    cmd = [str(venv / "bin" / "radseal"), "serve", "--key", "r.key", "--trust", "devices", "--store", "store",
           "--state", "state", "--port", str(port)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"radseal serve exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.01)
            if time.perf_counter() - t > 60:
                raise RuntimeError("radseal serve did not answer /healthz in 60 s")
        seconds = time.perf_counter() - t
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    return seconds, "diagnosis: on" in out


def prepare(env: dict, work: Path) -> dict:
    venv, radseal = env["venv"], str(env["venv"] / "bin" / "radseal")
    cwd = work / f"run-{env['extra']}"
    shutil.rmtree(cwd, ignore_errors=True)
    (cwd / "devices").mkdir(parents=True)
    run([radseal, "keygen", "receiver", "r"], cwd=cwd)
    run([radseal, "keygen", "device", "d"], cwd=cwd)
    shutil.move(cwd / "d.pub", cwd / "devices" / "d.pub")
    py = str(venv / "bin" / "python")
    rg3 = run([py, "-c", "from radseal.io.samples import sample_path; print(sample_path('RG3'))"]).stdout.strip()
    return {"venv": venv, "cwd": cwd, "py": py, "rg3": rg3,
            "commands": {"python_only": [py, "-c", "pass"], "help": [radseal, "--help"],
                         "encode_rg3": [radseal, "encode", rg3, "--to", "r.pub", "--sign", "d.key", "-o", "rg3.rsl"]}}


def cold_starts(envs: dict, work: Path, repeat: int) -> dict:
    """Every command of every environment once per round, environments interleaved, so that the
    machine's load falls on all of them alike."""
    runs = {name: prepare(env, work) for name, env in envs.items()}
    times = {name: {k: [] for k in (*r["commands"], "serve_healthz")} for name, r in runs.items()}
    diagnosis = {}
    for i in range(repeat):
        for name, r in runs.items():
            for key, cmd in r["commands"].items():
                times[name][key].append(once(cmd, r["cwd"]))
            if i < max(3, repeat // 2):
                seconds, diagnosis[name] = serve_once(r["venv"], r["cwd"])
                times[name]["serve_healthz"].append(seconds)
    res = {}
    for name, r in runs.items():
        res[name] = {k: summary(v) for k, v in times[name].items()}
        res[name]["serve_healthz"]["diagnosis_on"] = diagnosis[name]
        # Where the encode's time goes: the command's own timing line, and its imports.
        res[name]["encode_own_timing"] = run(r["commands"]["encode_rg3"], cwd=r["cwd"]).stdout.strip().splitlines()[-1].strip()
        imp = run([r["py"], "-X", "importtime", "-m", "radseal", *r["commands"]["encode_rg3"][1:]], cwd=r["cwd"]).stderr
        top = []
        for row in imp.splitlines():
            parts = row.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
                top.append((parts[2].strip(), int(parts[1]) / 1e6))
        res[name]["encode_imports_total_s"] = round(sum(t for _, t in top), 3)
        res[name]["encode_imports_top"] = [(n, round(t, 3)) for n, t in sorted(top, key=lambda x: -x[1])[:8]]
    return res


CLASSIFIER_SCRIPT = r"""
import json, sys, time
import numpy as np
from radseal.diagnosis.classifier import Classifier
clf = Classifier.pretrained()
views = np.random.default_rng(0).random((32, clf.size, clf.size), dtype=np.float32)
out = {}
def per_view(fn, n=3):
    best = []
    for _ in range(n):
        t = time.perf_counter(); fn(); best.append((time.perf_counter() - t) / len(views))
    return round(min(best) * 1000, 2)
out["numpy_ms_per_view_batch32"] = per_view(lambda: clf.probabilities(views))
out["numpy_ms_one_view"] = per_view(lambda: [clf.probabilities(v[None]) for v in views])
if sys.argv[1] == "torch":
    import torch
    from radseal.diagnosis.model import from_numpy_state, torch_probabilities
    if sys.argv[2] == "1":
        torch.set_num_threads(1)
    net = from_numpy_state(clf.state, clf.config)
    out["torch_threads"] = torch.get_num_threads()
    out["torch_ms_per_view_batch32"] = per_view(lambda: torch_probabilities(net, views))
    out["torch_ms_one_view"] = per_view(lambda: [torch_probabilities(net, v[None]) for v in views])
    out["max_abs_probability_difference"] = float(np.abs(clf.probabilities(views) - torch_probabilities(net, views)).max())
print(json.dumps(out))
"""


def classifier_speed(venv: Path, with_torch: bool) -> dict:
    """Default threads, then one thread for both (OpenBLAS and PyTorch)."""
    res = {}
    for threads in ("default", "1"):
        env = dict(os.environ)
        if threads == "1":
            env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        out = run([str(venv / "bin" / "python"), "-c", CLASSIFIER_SCRIPT, "torch" if with_torch else "numpy", threads], env=env)
        res[threads] = json.loads(out.stdout)
    return res


def markdown(r: dict) -> str:
    env = {e["extra"]: e for e in r["environments"]}
    core = env.get("core")
    lines = [
        "# Install footprint: the core install without PyTorch, and each extra",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}; Python {r['python']}; {r['date']}. One run; the machine is shared and noisy",
        f"(1-minute load average at the start {r['load_average_at_start'][0]}, before and after the cold starts "
        f"{r.get('load_average_before_cold_starts', ['-'])[0]} and {r.get('load_average_after_cold_starts', ['-'])[0]}), "
        "so compare numbers within this run: the core and the full environment were timed interleaved, round by round.",
        "",
        "## Size of a fresh virtual environment and time to install",
        "",
        f"`python -m venv`, then `pip install` of the wheel built by `pip wheel --no-deps` ({r['wheel']['name']}, "
        f"{r['wheel']['mb']} MB); dependencies from the index pip is configured with (on this machine a local mirror and "
        "pip's cache, so the times are install times, not download times over a real link). Size: blocks allocated "
        "under the venv folder, pip and setuptools included, MB = 10^6 bytes.",
        "",
        "| install | size on disk | install time | packages | torch | other heavy packages |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| empty venv (reference) | {r['empty_venv_mb']} MB | | | | |",
    ]
    for e in r["environments"]:
        name = "`pip install radseal` (core)" if e["extra"] == "core" else f"`pip install 'radseal[{e['extra']}]'`"
        heavy = ", ".join(f"{k} {v}" for k, v in e["heavy"].items() if k != "torch") or "none"
        lines.append(f"| {name} | {e['size_mb']} MB | {e['install_s']} s | {e['packages']} | {e['torch'] or 'no'} | {heavy} |")
    if core:
        lines += ["", f"Largest entries of the core's site-packages (MB): "
                  + ", ".join(f"{n} {mb}" for n, mb in core["largest"]) + "."]
        ok = core["size_mb"] <= TARGET_CORE_MB and not core["torch"]
        lines += ["", f"Target: core <= {TARGET_CORE_MB:.0f} MB and no torch: **{'met' if ok else 'missed'}** "
                  f"({core['size_mb']} MB, torch {'absent' if not core['torch'] else 'present'})."]
    lines += ["", "## Cold start", "",
              "A new process per run, interpreter start included; `first` is the first run after install "
              "(cold file cache for the venv), `median` over the others, `min` over all "
              f"({next(iter(r['cold_start'].values()))['encode_rg3']['runs']} runs per command, "
              f"{next(iter(r['cold_start'].values()))['serve_healthz']['runs']} for serve).", "",
              "| install | `python -c pass` | `radseal --help` | `radseal encode` RG3 (first / median / min) | `radseal serve` until /healthz (first / median) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, c in r["cold_start"].items():
        e, s = c["encode_rg3"], c["serve_healthz"]
        lines.append(f"| {name} | {c['python_only']['median_s']} s | {c['help']['median_s']} s | "
                     f"{e['first_s']} / {e['median_s']} / {e['min_s']} s | {s['first_s']} / {s['median_s']} s "
                     f"(diagnosis {'on' if s['diagnosis_on'] else 'off'}) |")
    if "core" in r["cold_start"]:
        c = r["cold_start"]["core"]
        met = c["encode_rg3"]["median_s"] <= TARGET_ENCODE_S
        lines += ["", f"Target: cold `radseal encode` of RG3 <= {TARGET_ENCODE_S} s on this machine: "
                  f"**{'met' if met else 'missed'}** by the median ({c['encode_rg3']['median_s']} s on the core install; "
                  f"fastest run {c['encode_rg3']['min_s']} s).", "",
                  f"The encode's own timing line (core): `{c['encode_own_timing']}`; its imports took "
                  f"{c['encode_imports_total_s']} s in all. Slowest top-level imports "
                  "(`python -X importtime`, seconds, cumulative): "
                  + ", ".join(f"{n} {s}" for n, s in c["encode_imports_top"]) + "."]
    if r.get("classifier"):
        lines += ["", "## Pneumonia classifier: numpy (core) against PyTorch", "",
                  "The shipped weights, 224 x 224 views, best of 3 runs over 32 views, in the full environment; "
                  "threads: each library's default (2 here), then one thread (OPENBLAS_NUM_THREADS=1, "
                  "torch.set_num_threads(1)).", "",
                  "| runtime | threads | ms per view, batches of 32 | ms per view, one at a time |", "| --- | --- | ---: | ---: |"]
        for threads, k in r["classifier"].items():
            lines.append(f"| numpy (radseal.diagnosis.inference) | {threads} | {k['numpy_ms_per_view_batch32']} | {k['numpy_ms_one_view']} |")
            if "torch_ms_per_view_batch32" in k:
                lines.append(f"| PyTorch {env.get('test', {}).get('torch', '')} | {threads} ({k['torch_threads']}) | "
                             f"{k['torch_ms_per_view_batch32']} | {k['torch_ms_one_view']} |")
        k = r["classifier"]["default"]
        if "max_abs_probability_difference" in k:
            lines += ["", f"Largest probability difference on these (random) views: {k['max_abs_probability_difference']:.1e}; "
                      "on the 126 test images it is checked below 1e-4 by "
                      "tests/test_diagnosis_classifier.py::test_numpy_network_matches_pytorch_on_all_test_images."]
        lines += ["", "ONNX Runtime was not measured: numpy is already a core dependency and runs this network "
                  "at about PyTorch's speed here, so another runtime could only add size."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--extras", default=",".join(EXTRAS), help=f"comma-separated, from {','.join(EXTRAS)}")
    ap.add_argument("--repeat", type=int, default=9, help="cold-start runs per command")
    ap.add_argument("--keep", help="keep the environments in this folder (default: a temporary folder, removed)")
    args = ap.parse_args()
    extras = [e for e in args.extras.split(",") if e]
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        ap.error(f"unknown extras: {', '.join(sorted(unknown))}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="radseal-footprint-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        wheel = build_wheel(work)
        empty = work / "venv-empty"
        run([sys.executable, "-m", "venv", str(empty)])
        r = {
            "command": "python benchmarks/install_footprint.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "wheel": {"name": wheel.name, "mb": round(wheel.stat().st_size / 1e6, 2)},
            "empty_venv_mb": round(disk_mb(empty), 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "environments": [],
            "cold_start": {},
        }
        envs = {}
        for extra in extras:
            print(f"installing {extra} ...", file=sys.stderr, flush=True)
            envs[extra] = make_env(work, wheel, extra)
            r["environments"].append({k: v for k, v in envs[extra].items() if k != "venv"})
            if extra not in ("core", "test"):
                shutil.rmtree(envs[extra]["venv"], ignore_errors=True)  # disk: keep only what is timed
        timed_envs = {name: envs[name] for name in ("core", "test") if name in envs}
        if timed_envs:
            print(f"cold starts in {', '.join(timed_envs)} ...", file=sys.stderr, flush=True)
            r["load_average_before_cold_starts"] = [round(x, 2) for x in os.getloadavg()]
            r["cold_start"] = cold_starts(timed_envs, work, args.repeat)
            r["load_average_after_cold_starts"] = [round(x, 2) for x in os.getloadavg()]
        if "test" in envs:
            r["classifier"] = classifier_speed(envs["test"]["venv"], with_torch=True)
        elif "core" in envs:
            r["classifier"] = classifier_speed(envs["core"]["venv"], with_torch=False)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "install_footprint.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "install_footprint.md").write_text(markdown(r))
    print((out / "install_footprint.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
