"""The core install (``pip install radseal``, no extras) works without PyTorch, SciPy,
scikit-learn, matplotlib and imagecodecs.

Each command runs in a child process whose import system refuses those packages (a
``sys.meta_path`` finder that raises ``ModuleNotFoundError``, as if they were not
installed) and reports every attempt on stderr, so a core command that even tries one,
and silently falls back, fails here too. A real virtual environment with the core
alone is built by benchmarks/install_footprint.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import radseal
from radseal.extras import EXTRAS, PACKAGES

BLOCKED = ("torch", "torchvision", "scipy", "sklearn", "matplotlib", "imagecodecs", "psycopg", "psycopg_pool")
MARK = "[core-install test: blocked import "

PREAMBLE = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            sys.stderr.write({MARK!r} + name + "]\\n")
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
for _m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    raise SystemExit("already imported before the test: " + _m)
"""

RUN_CLI = PREAMBLE + """
from radseal.cli import main
sys.argv[0] = "radseal"
sys.exit(main(sys.argv[1:]))
"""


# The children import the radseal under test wherever they run (not one found through a relative path).
_PATHS = [str(Path(radseal.__file__).resolve().parents[1]), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(_PATHS)}


def python(code: str, *args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def core(*args, cwd, timeout=120) -> subprocess.CompletedProcess:
    """``radseal ARGS`` as the core install runs it."""
    return python(RUN_CLI, *args, cwd=cwd, timeout=timeout)


def attempts(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(MARK)]


def user_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(MARK)]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts(proc.stderr) == [], f"a core command tried to import an extra: {attempts(proc.stderr)}"
    return proc


def test_the_blocker_really_blocks(tmp_path):
    """The fixture itself: torch is refused and the attempt is reported (else every test here would be void)."""
    proc = python(PREAMBLE + "import torch")
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
    assert attempts(proc.stderr) == [MARK + "torch]"]


def test_start_up_imports_no_extra(tmp_path):
    proc = ok(core("--help", cwd=tmp_path))
    assert "encode" in proc.stdout and "serve" in proc.stdout
    for command in ("encode", "decode", "inspect", "keygen", "send", "serve", "evaluate", "train-codec", "paper"):
        ok(core(command, "--help", cwd=tmp_path))
    # Building the parser (every command's --help) loads neither the DICOM stack nor an extra.
    code = PREAMBLE + """
from radseal.cli import build_parser
build_parser()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pydicom", "PIL", "fastapi", "uvicorn", "httpx", "constriction"})
assert not heavy, heavy
"""
    ok(python(code))
    # The library's front door too.
    code = PREAMBLE + "import radseal, radseal.cli, radseal.pipeline, radseal.diagnosis.classifier, radseal.transport.receiver"
    ok(python(code))


def test_core_commands_round_trip_a_radiograph(tmp_path, rg3_path):
    from radseal.io import read_image

    ok(core("keygen", "receiver", "hospital", cwd=tmp_path))
    ok(core("keygen", "device", "unit7", cwd=tmp_path))
    enc = ok(core("encode", rg3_path, "--to", "hospital.pub", "--sign", "unit7.key", "-o", "rg3.rsl", cwd=tmp_path))
    assert "1760x1760 at 10 bits" in enc.stdout
    ins = ok(core("inspect", "rg3.rsl", cwd=tmp_path))
    assert "radseal container" in ins.stdout
    dec = ok(core("decode", "rg3.rsl", "--key", "hospital.key", "--trust", "unit7.pub", "-o", "rg3.dcm", cwd=tmp_path))
    assert "authentic" in dec.stdout
    original, decoded = read_image(rg3_path), read_image(tmp_path / "rg3.dcm")
    assert decoded.shape == original.shape and decoded.bits_stored == 10
    err = np.abs(decoded.pixels.astype(np.int64) - original.pixels.astype(np.int64))
    assert 0 < err.max() < 64 and err.mean() < 2  # lossy, and close (the default quality)


def test_demo_runs_on_the_core(tmp_path):
    proc = core("demo", "--out", "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The one optional import: imagecodecs, for the JPEG-LS and JPEG XL sizes beside radseal's own.
    assert {a.split()[-1].rstrip("]") for a in attempts(proc.stderr)} <= {"imagecodecs"}, proc.stderr
    assert "reconstruction: 15 bits, PSNR" in proc.stdout
    assert "lossless" in proc.stdout and "pip install 'radseal[evaluate]'" in proc.stdout
    assert (tmp_path / "demo" / "RG1-decoded.dcm").is_file()


def test_core_library_seal_open_and_classifier(tmp_path, rg1_path):
    """seal()/open_sealed() and the numpy classifier, called as a library with the extras absent."""
    code = PREAMBLE + f"""
import numpy as np
import radseal
from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey
from radseal.diagnosis import Classifier

img = radseal.read_image({str(rg1_path)!r})
receiver, device = ReceiverKey.generate(), DeviceKey.generate()
body = b"any bytes"
sealed = radseal.seal(body, receiver.public_key(), device)
opened = radseal.open_sealed(sealed, receiver, [device.public_key()])
assert opened.body == body, "seal/open"
crop = img.with_pixels(img.pixels[600:1112, 600:1112].copy())
msg = seal_image(crop, receiver.public_key(), device)
back = open_image(msg.data, [receiver], [device.public_key()])
assert back.image.shape == crop.shape
pred = Classifier.pretrained().predict(img)
print("p=%.6f" % pred.probability)
"""
    proc = ok(python(code))
    p_core = float(proc.stdout.strip().split("=")[1])
    # The same number the test process computes (the child had no PyTorch to fall back on).
    from radseal.diagnosis.classifier import Classifier
    from radseal.io import read_image

    assert p_core == pytest.approx(Classifier.pretrained().predict(read_image(rg1_path)).probability, abs=1e-6)


def test_preserve_diagnosis_runs_on_the_core(tmp_path, rg1_path):
    from radseal.image import Image
    from radseal.io import read_image, write_png

    img = read_image(rg1_path)
    small = Image(img.pixels[::4, ::4].copy(), bits_stored=img.bits_stored, photometric=img.photometric)
    write_png(small, tmp_path / "chest.png")
    ok(core("keygen", "receiver", "r", cwd=tmp_path))
    ok(core("keygen", "device", "d", cwd=tmp_path))
    proc = ok(core("encode", "chest.png", "--to", "r.pub", "--sign", "d.key", "--preserve-diagnosis", "-o", "c.rsl", cwd=tmp_path))
    assert "--preserve-diagnosis: quality" in proc.stdout and "p(pneumonia)" in proc.stdout


def _neural_message(folder):
    """(message id, sealed rsc1 container) for the keys in ``folder``, made with PyTorch; None without it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    from radseal.codec import Codec
    from radseal.pipeline import seal_image
    from radseal.seal import load_device_key, load_receiver_public_key, parse_header

    img = _gradient_image(96, 128)
    data = seal_image(img, load_receiver_public_key(folder / "hospital.pub"), load_device_key(folder / "unit7.key"),
                      codec=Codec.pretrained("rsc1-mshp-n128"), quality=4).data  # the default rate may pick the native coder
    return parse_header(data).message_id, data


def _gradient_image(h, w):
    from radseal.image import Image

    yy, xx = np.mgrid[0:h, 0:w]
    return Image(((yy * 3 + xx * 5) % 4096).astype(np.uint16), bits_stored=12)


def test_receiver_round_trip_with_diagnosis_on_the_core(tmp_path):
    import httpx

    from radseal.image import Image
    from radseal.io import write_png
    from radseal.transport.drill import free_port

    ok(core("keygen", "receiver", "hospital", cwd=tmp_path))
    ok(core("keygen", "device", "unit7", cwd=tmp_path))
    (tmp_path / "devices").mkdir()
    (tmp_path / "unit7.pub").rename(tmp_path / "devices" / "unit7.pub")
    write_png(_gradient_image(300, 260), tmp_path / "scan.png")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-c", RUN_CLI, "serve", "--key", "hospital.key", "--trust", "devices",
                              "--store", "store", "--state", "state", "--port", str(port), "--diagnosis", "auto"],
                             cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "radseal serve did not answer /healthz in 60 s"
            time.sleep(0.1)
        sent = ok(core("send", "scan.png", "--to", f"http://127.0.0.1:{port}", "--recipient", "hospital.pub",
                       "--sign", "unit7.key", "--outbox", "outbox", cwd=tmp_path))
        neural = _neural_message(tmp_path)
        if neural is not None:  # a stream the core cannot decode: kept in the archive, answered 422
            message_id, data = neural
            r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=data, timeout=60)
            assert r.status_code == 422 and r.json()["error"] == "undecodable", r.text
            assert "radseal[neural]" in r.json()["detail"], r.text
            archived = list((tmp_path / "state" / "archive").glob(f"*/{message_id}.rsl"))
            assert [a.read_bytes() for a in archived] == [data]
    finally:
        serve.terminate()
        serve.wait(20)
        log.close()
    served = (tmp_path / "serve.log").read_text()
    before_neural, _, after = served.partition(MARK)
    assert "diagnosis: on" in before_neural, served[-2000:]
    # The only import the receiver tried was PyTorch, for the neural stream, after the PNG was stored.
    assert {line for line in attempts(served)} <= {MARK + "torch]"}
    assert ("undecodable" in after) if neural is not None else not after
    assert "stored  " in sent.stdout and " p=" in sent.stdout  # the receipt carries the classifier's verdict


def test_commands_that_need_an_extra_say_which_in_one_line(tmp_path):
    cases = {
        ("train-classifier",): "train",
        ("train-codec",): "train",
        ("fit-codec",): "train",
        ("export-codec", "x.ckpt"): "train",
        ("evaluate", "--out", "ev"): "evaluate",
        ("paper", "sweep", "--out", "sw"): "paper",
        ("demo", "--insecure-paper-cipher", "--out", "dm"): "paper",
    }
    for args, extra in cases.items():
        proc = core(*args, cwd=tmp_path)
        lines = user_lines(proc.stderr)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("radseal: error: "), (args, proc.stderr)
        assert f"pip install 'radseal[{extra}]'" in lines[0], (args, lines)
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written by a refused command


def test_cli_names_the_extra_for_an_unguarded_import(monkeypatch, capsys):
    """The CLI's last line of defence: a code path that imports an extra's package without its
    own check still ends in one line naming the extra; any other missing module stays a bug."""
    import radseal.cli.codec as codec_cli
    from radseal.cli import main

    def needs(name):
        def run(args):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return run

    monkeypatch.setattr(codec_cli, "run_train", needs("torch.nn"))
    assert main(["train-codec"]) == 2
    err = capsys.readouterr().err
    assert err == "radseal: error: radseal train-codec needs PyTorch: pip install 'radseal[train]'\n"
    monkeypatch.setattr(codec_cli, "run_export", needs("matplotlib"))  # not in radseal[train]
    assert main(["export-codec", "x.ckpt"]) == 2
    assert "needs matplotlib: pip install 'radseal[paper]'" in capsys.readouterr().err
    monkeypatch.setattr(codec_cli, "run_train", needs("yaml"))
    assert main(["train-codec"]) == 70
    err = capsys.readouterr().err
    assert "unexpected ModuleNotFoundError" in err and "this is a bug" in err


def test_decoding_a_neural_stream_names_the_neural_extra(tmp_path, rg1_path):
    """An rsc1 (neural hyperprior) container: made here with PyTorch, opened on the core."""
    pytest.importorskip("torch", reason="making an rsc1 stream needs radseal[neural]")
    from radseal.codec import Codec
    from radseal.io import read_image
    from radseal.pipeline import seal_image
    from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key

    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, tmp_path / "r.key")
    save_public_key(device.public_key(), tmp_path / "d.pub")
    img = read_image(rg1_path)
    crop = img.with_pixels(img.pixels[:256, :256].copy())
    data = seal_image(crop, receiver.public_key(), device, codec=Codec.pretrained("rsc1-mshp-n128"), quality=4).data
    (tmp_path / "n.rsl").write_bytes(data)
    proc = core("decode", "n.rsl", "--key", "r.key", "--trust", "d.pub", "-o", "n.dcm", cwd=tmp_path)
    lines = user_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "needs PyTorch: pip install 'radseal[neural]'" in lines[0]
    assert not (tmp_path / "n.dcm").exists()


def test_extras_named_in_messages_exist_in_pyproject():
    """The extras the messages name are declared in pyproject.toml with the packages they promise,
    and none of those packages is a core dependency."""
    import tomllib

    from radseal.extras import COMMAND_EXTRAS, EXTRA_PACKAGES

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    dist = {"torch": "torch", "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "imagecodecs": "imagecodecs",
            "psycopg": "psycopg", "psycopg_pool": "psycopg-pool"}
    assert set(dist) == set(PACKAGES)
    names = lambda reqs: {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in reqs}
    core_deps = names(pyproject["project"]["dependencies"])
    assert not core_deps & set(dist.values()), core_deps & set(dist.values())
    for extra, modules in EXTRA_PACKAGES.items():
        assert names(declared[extra]) == {dist[m] for m in modules}, extra
        assert "torch==2.13.0" in declared[extra] or "torch" not in modules
    assert set(COMMAND_EXTRAS.values()) <= set(EXTRA_PACKAGES)
    assert set(EXTRAS) == set(declared) == set(EXTRA_PACKAGES) | {"test"}
    assert names(declared["test"]) >= {"radseal", "pytest", "hypothesis"}
    assert set(declared["test"][0].split("[")[1].rstrip("]").split(",")) == set(EXTRA_PACKAGES)
