"""Bad input to every ``radseal`` subcommand ends cleanly.

The contract (docs: DESIGN.md, "Exit status"): a non-zero exit status, exactly
one line ``radseal: error: ...`` on stderr (argparse's own usage errors
excepted), no traceback, and no output file -- partial or temporary --
left behind. Inputs are small generated images so the whole module runs in
seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radseal.cli import main
from radseal.image import Image
from radseal.io import write_dicom, write_png

# --------------------------------------------------------------------------- inputs


@pytest.fixture(autouse=True, scope="module")
def _codec_loaded_once():
    """Load the shipped codec weights once for the module instead of once per command."""
    import radseal.pipeline

    codec = radseal.pipeline.default_codec()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(radseal.pipeline, "default_codec", lambda: codec)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Keys, a small image, a valid container and a zoo of damaged files, made once."""
    root = tmp_path_factory.mktemp("cli-errors")
    rng = np.random.default_rng(0)
    pixels = (rng.random((64, 64)) * 255).astype(np.uint8)
    write_png(Image(pixels), root / "small.png")
    png = (root / "small.png").read_bytes()
    (root / "trunc.png").write_bytes(png[: len(png) // 2])
    write_dicom(Image((pixels.astype(np.uint16) * 16), 12), root / "small.dcm")
    dcm = (root / "small.dcm").read_bytes()
    (root / "trunc.dcm").write_bytes(dcm[: len(dcm) - 2000])  # header intact, pixel data cut short
    (root / "garbage.png").write_bytes(os.urandom(3000))
    (root / "empty.png").write_bytes(b"")
    (root / "empty.rsl").write_bytes(b"")
    (root / "garbage.rsl").write_bytes(os.urandom(3000))
    (root / "not-a-folder").write_text("a file where a folder is expected\n")
    (root / "emptydir").mkdir()
    (root / "adir.rsl").mkdir()

    keys = root / "keys"
    keys.mkdir()
    for role, name in (("receiver", "rx"), ("receiver", "rx2"), ("device", "dev"), ("device", "dev2")):
        assert main(["keygen", role, name, "--out", str(keys)]) == 0

    def seal(to: str, sign: str, out: str) -> None:
        assert main(["encode", str(root / "small.png"), "--to", str(keys / to), "--sign", str(keys / sign),
                     "-o", str(root / out), "--quality", "2"]) == 0

    seal("rx.pub", "dev.key", "ok.rsl")
    seal("rx2.pub", "dev.key", "other-receiver.rsl")
    seal("rx.pub", "dev2.key", "untrusted-sender.rsl")
    ok = (root / "ok.rsl").read_bytes()
    (root / "trunc.rsl").write_bytes(ok[: len(ok) // 2])
    flipped = bytearray(ok)
    flipped[len(ok) // 2] ^= 1
    (root / "flipped.rsl").write_bytes(bytes(flipped))
    return root


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for root in roots:
        for path in root.rglob("*"):
            st = path.lstat()
            files[str(path)] = (st.st_size, st.st_mtime_ns if path.is_file() else 0)
    return files


def _expand(argv: list[str], world: Path) -> list[str]:
    return [a.replace("W/", f"{world}/") for a in argv]


def _assert_clean_failure(code, err: str, before: dict, after: dict, usage_ok: bool = False) -> None:
    assert code not in (0, None), f"exit status {code}: the command succeeded"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    if usage_ok and lines and lines[0].startswith("usage:"):
        assert lines[-1].startswith("radseal ") and ": error: " in lines[-1], err
    else:
        assert len(lines) == 1 and lines[0].startswith("radseal: error: "), f"stderr is not one error line:\n{err}"
        assert "unexpected" not in lines[0], f"an unexpected exception reached the last line of defence: {lines[0]}"
    made = sorted(set(after) - set(before))
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    assert not made, f"left behind: {made}"
    assert not changed, f"modified: {changed}"


def _run(argv: list[str], world: Path, cwd: Path, capsys, monkeypatch) -> tuple[int | None, str]:
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main(_expand(argv, world))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- the cases

def enc(*extra: str, inp: str = "W/small.png", to: str = "W/keys/rx.pub", sign: str = "W/keys/dev.key",
        out: str = "out.rsl") -> list[str]:
    return ["encode", inp, "--to", to, "--sign", sign, "-o", out, *extra]


def dec(inp: str = "W/ok.rsl", *, key: str = "W/keys/rx.key", trust: str = "W/keys/dev.pub",
        out: str = "out.png") -> list[str]:
    return ["decode", inp, "--key", key, "--trust", trust, "-o", out]


def serve(*extra: str) -> list[str]:
    return ["serve", "--key", "W/keys/rx.key", "--trust", "W/keys/dev.pub", "--store", "store",
            "--state", "state", "--diagnosis", "off", *extra]


def send(*extra: str, inp: str = "W/small.png", rec: str = "W/keys/rx.pub") -> list[str]:
    return ["send", inp, "--to", "http://127.0.0.1:9", "--recipient", rec, "--sign", "W/keys/dev.key",
            "--outbox", "outbox", "--retries", "1", "-q", *extra]


CASES = {
    # encode: the image
    "encode/missing-input": enc(inp="W/nope.png"),
    "encode/folder-input": enc(inp="W/emptydir"),
    "encode/empty-input": enc(inp="W/empty.png"),
    "encode/garbage-input": enc(inp="W/garbage.png"),
    "encode/truncated-png": enc(inp="W/trunc.png"),
    "encode/truncated-dicom": enc(inp="W/trunc.dcm"),
    "encode/container-as-image": enc(inp="W/ok.rsl"),
    # encode: keys of the wrong kind
    "encode/to-device-public-key": enc(to="W/keys/dev.pub"),
    "encode/to-receiver-private-key": enc(to="W/keys/rx.key"),
    "encode/to-missing-key": enc(to="W/keys/nope.pub"),
    "encode/to-garbage-key": enc(to="W/garbage.rsl"),
    "encode/sign-with-receiver-key": enc(sign="W/keys/rx.key"),
    "encode/sign-with-public-key": enc(sign="W/keys/dev.pub"),
    # encode: numbers and outputs
    "encode/quality-999": enc("--quality", "999"),
    "encode/quality-0": enc("--quality", "0"),
    "encode/quality-47": enc("--quality", "47"),
    "encode/bpp-negative": enc("--bpp", "-1"),
    "encode/bpp-nan": enc("--bpp", "nan"),
    "encode/output-in-missing-folder": enc(out="nowhere/out.rsl"),
    "encode/output-under-a-file": enc(out="W/not-a-folder/out.rsl"),
    "encode/output-is-a-folder": enc(out="W/adir.rsl"),
    "encode/output-wrong-extension": enc(out="out.png"),
    # decode
    "decode/missing": dec("W/nope.rsl"),
    "decode/folder": dec("W/emptydir"),
    "decode/empty": dec("W/empty.rsl"),
    "decode/garbage": dec("W/garbage.rsl"),
    "decode/truncated": dec("W/trunc.rsl"),
    "decode/bit-flipped": dec("W/flipped.rsl"),
    "decode/image-as-container": dec("W/small.png"),
    "decode/for-another-receiver": dec("W/other-receiver.rsl"),
    "decode/untrusted-sender": dec("W/untrusted-sender.rsl"),
    "decode/key-is-device-key": dec(key="W/keys/dev.key"),
    "decode/key-is-public": dec(key="W/keys/rx.pub"),
    "decode/trust-receiver-key": dec(trust="W/keys/rx.pub"),
    "decode/trust-private-key": dec(trust="W/keys/dev.key"),
    "decode/trust-empty-folder": dec(trust="W/emptydir"),
    "decode/output-wrong-extension": dec(out="out.jpg"),
    "decode/output-in-missing-folder": dec(out="nowhere/out.png"),
    "decode/output-under-a-file": dec(out="W/not-a-folder/out.dcm"),
    # inspect
    "inspect/missing": ["inspect", "W/nope.rsl"],
    "inspect/folder": ["inspect", "W/emptydir"],
    "inspect/empty": ["inspect", "W/empty.rsl"],
    "inspect/garbage": ["inspect", "W/garbage.rsl"],
    "inspect/truncated": ["inspect", "W/trunc.rsl"],
    # keygen
    "keygen/out-missing": ["keygen", "receiver", "k", "--out", "nowhere"],
    "keygen/name-with-folder": ["keygen", "device", "a/b"],
    "keygen/exists": ["keygen", "receiver", "rx", "--out", "W/keys"],
    "keygen/passphrase-file-missing": ["keygen", "receiver", "k", "--passphrase-file", "W/nope.txt"],
    # demo (fails before any work: nothing may be written)
    "demo/quality-999": ["demo", "--out", "demo", "--quality", "999"],
    "demo/quality-47": ["demo", "--out", "demo", "--quality", "47"],
    "demo/bpp-nan": ["demo", "--out", "demo", "--bpp", "nan"],
    "demo/bpp-negative": ["demo", "--out", "demo", "--bpp", "-1"],
    "demo/out-is-a-file": ["demo", "--out", "W/not-a-folder"],
    "demo/out-under-a-file": ["demo", "--out", "W/not-a-folder/demo"],
    # serve (every case fails before the service starts)
    "serve/key-missing": ["serve", "--key", "W/keys/nope.key", "--trust", "W/keys/dev.pub", "--store", "store"],
    "serve/key-is-device-key": ["serve", "--key", "W/keys/dev.key", "--trust", "W/keys/dev.pub", "--store", "store"],
    "serve/trust-receiver-key": ["serve", "--key", "W/keys/rx.key", "--trust", "W/keys/rx.pub", "--store", "store"],
    "serve/max-body-nan": serve("--max-body", "nan"),
    "serve/max-body-negative": serve("--max-body", "-1"),
    "serve/tls-files-missing": serve("--ssl-certfile", "W/nope.pem", "--ssl-keyfile", "W/nope.pem"),
    "serve/tls-files-garbage": serve("--ssl-certfile", "W/garbage.rsl", "--ssl-keyfile", "W/garbage.rsl"),
    "serve/store-under-a-file": ["serve", "--key", "W/keys/rx.key", "--trust", "W/keys/dev.pub",
                                 "--store", "W/not-a-folder/store", "--state", "state"],
    "serve/state-is-a-file": ["serve", "--key", "W/keys/rx.key", "--trust", "W/keys/dev.pub", "--store", "store",
                              "--state", "W/not-a-folder", "--diagnosis", "off"],
    "serve/state-under-a-file": ["serve", "--key", "W/keys/rx.key", "--trust", "W/keys/dev.pub",
                                 "--store", "store", "--state", "W/not-a-folder/state", "--diagnosis", "off"],
    "serve/host-unknown": serve("--host", "no-such-host.invalid"),
    # send (every case fails before anything is sealed; no outbox is left behind)
    "send/missing-input": send(inp="W/nope.png"),
    "send/folder-input": send(inp="W/emptydir"),
    "send/garbage-input": send(inp="W/garbage.png"),
    "send/truncated-dicom": send(inp="W/trunc.dcm"),
    "send/recipient-is-device-key": send(rec="W/keys/dev.pub"),
    "send/quality-999": send("--quality", "999"),
    "send/quality-47": send("--quality", "47"),
    "send/timeout-nan": send("--timeout", "nan"),
    "send/timeout-negative": send("--timeout", "-1"),
    "send/backoff-negative": send("--backoff", "-1"),
    "send/cacert-missing": send("--cacert", "W/nope.pem"),
    "send/url-not-http": ["send", "W/small.png", "--to", "ftp://host", "--recipient", "W/keys/rx.pub",
                          "--sign", "W/keys/dev.key", "--outbox", "outbox"],
    "send/url-port-out-of-range": ["send", "W/small.png", "--to", "http://127.0.0.1:99999", "--recipient",
                                   "W/keys/rx.pub", "--sign", "W/keys/dev.key", "--outbox", "outbox"],
    "send/url-without-host": ["send", "W/small.png", "--to", "https:///v1", "--recipient", "W/keys/rx.pub",
                              "--sign", "W/keys/dev.key", "--outbox", "outbox"],
    "send/url-malformed": ["send", "W/small.png", "--to", "http://[::1", "--recipient", "W/keys/rx.pub",
                           "--sign", "W/keys/dev.key", "--outbox", "outbox"],
    "send/flush-without-outbox": ["send", "--flush", "--to", "http://127.0.0.1:9", "--outbox", "outbox"],
    "send/outbox-under-a-file": send("--outbox", "W/not-a-folder/outbox"),
    # training, evaluation and the paper baseline: checks before work
    "train-codec/data-missing": ["train-codec", "--data", "W/nope", "--out", "run", "--steps", "1", "--no-progress"],
    "train-codec/crop-not-multiple-of-64": ["train-codec", "--synthetic", "--crop", "65", "--out", "run", "--steps", "1"],
    **{
        f"train-codec/{flag[2:]}-{value}": ["train-codec", "--synthetic", "--out", "run", "--no-progress", flag, value]
        for flag, value in [("--crop", "0"), ("--batch", "0"), ("--lr", "nan"), ("--log-every", "0"),
                            ("--steps", "-1"), ("--threads", "0"), ("--checkpoint-every", "nan")]
    },
    "paper-roundtrip/missing-image": ["paper", "roundtrip", "W/nope.png", "--key-image", "W/small.png",
                                      "--insecure-paper-cipher", "--out", "pr"],
    "paper-sweep/data-without-splits": ["paper", "sweep", "--data", "W/emptydir", "--out", "ps", "--smoke",
                                        "--no-progress"],
    "export-codec/missing": ["export-codec", "W/nope.pt", "--out", "weights"],
    "export-codec/garbage": ["export-codec", "W/garbage.rsl", "--out", "weights"],
    "export-codec/image": ["export-codec", "W/small.png", "--out", "weights"],
    "evaluate/data-missing": ["evaluate", "--data", "W/nope", "--out", "ev", "--quiet"],
    "evaluate/data-is-a-file": ["evaluate", "--data", "W/small.png", "--out", "ev", "--quiet"],
    "evaluate/limit-0": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--limit", "0", "--quiet"],
    "evaluate/unknown-codec": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--codecs", "nope", "--quiet"],
    "evaluate/bpp-negative": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--bpp", "-1", "--quiet"],
    "evaluate/bpp-nan": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--bpp", "nan", "--quiet"],
    "evaluate/codecs-empty": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--codecs", ",", "--quiet"],
    "evaluate/samples-negative": ["evaluate", "--data", "W/emptydir", "--out", "ev", "--samples", "-1", "--quiet"],
    "train-classifier/threads-0": ["train-classifier", "--data", "W/emptydir", "--out", "clf", "--threads", "0"],
    "train-classifier/data-missing": ["train-classifier", "--data", "W/nope", "--out", "clf", "--quiet"],
    "train-classifier/epochs-0": ["train-classifier", "--data", "W/nope", "--out", "clf", "--epochs", "0"],
    "paper-roundtrip/without-insecure-flag": ["paper", "roundtrip", "W/small.png", "--key-image", "W/small.png",
                                              "--out", "pr"],
    "paper-sweep/data-missing": ["paper", "sweep", "--data", "W/nope", "--out", "ps", "--smoke", "--no-progress"],
    "paper-sweep/epochs-0": ["paper", "sweep", "--data", "W/nope", "--out", "ps", "--epochs", "0", "--smoke"],
}

# argparse rejects these itself (usage line + "radseal CMD: error: ...").
USAGE_CASES = {
    "encode/quality-not-an-integer": enc("--quality", "2.5"),
    "keygen/unknown-role": ["keygen", "printer", "k"],
    "serve/port-out-of-range": serve("--port", "99999"),
    "serve/port-negative": serve("--port", "-1"),
    "send/quality-nan": send("--quality", "nan"),
    "paper/no-subcommand": ["paper"],
}


@pytest.mark.parametrize("argv", list(CASES.values()), ids=list(CASES))
def test_bad_input_gives_one_error_line_and_no_output(argv, world, tmp_path, capsys, monkeypatch):
    before = _snapshot(world, tmp_path)
    code, err = _run(argv, world, tmp_path, capsys, monkeypatch)
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))


@pytest.mark.parametrize("argv", list(USAGE_CASES.values()), ids=list(USAGE_CASES))
def test_argparse_rejects_malformed_arguments(argv, world, tmp_path, capsys, monkeypatch):
    before = _snapshot(world, tmp_path)
    code, err = _run(argv, world, tmp_path, capsys, monkeypatch)
    assert code == 2
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path), usage_ok=True)


def test_serve_refuses_a_port_in_use(world, tmp_path, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        before = _snapshot(world, tmp_path)
        code, err = _run(serve("--port", port), world, tmp_path, capsys, monkeypatch)
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))
    assert "cannot listen" in err


def test_a_damaged_image_among_several_keeps_what_was_sealed(world, tmp_path, capsys, monkeypatch):
    """send: images sealed before the bad one stay in the outbox (the next run delivers them)."""
    from radseal.transport.outbox import Outbox

    argv = send()
    argv[2:2] = ["W/garbage.png"]  # send W/small.png W/garbage.png ...
    code, err = _run(argv, world, tmp_path, capsys, monkeypatch)
    assert code != 0 and err.startswith("radseal: error: ") and "garbage.png" in err
    assert Outbox(tmp_path / "outbox").counts()["pending"] == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("command", ["encode", "send"])
def test_a_pipe_or_device_is_not_read_as_an_image(command, world, tmp_path, capsys, monkeypatch):
    """A FIFO (or /dev/zero) would block or be read without end: refused before it is opened."""
    import threading

    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)

    def unblock() -> None:  # if a regression opens the pipe, end the read instead of hanging the suite
        with open(fifo, "wb"):
            pass

    valve = threading.Timer(10.0, unblock)
    valve.daemon = True
    valve.start()
    try:
        argv = enc(inp=str(fifo)) if command == "encode" else send(inp=str(fifo))
        before = _snapshot(world, tmp_path)
        code, err = _run(argv, world, tmp_path, capsys, monkeypatch)
    finally:
        valve.cancel()
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))
    assert "not a regular file" in err


# --------------------------------------------------------------------------- interruptions


def _interrupt(exc: BaseException):
    def raiser(*args, **kwargs):
        raise exc

    return raiser


@pytest.mark.parametrize(
    "argv, expected_code",
    [
        (enc(), 130),
        (dec(), 130),
        (dec(out="out.dcm"), 130),
        (["keygen", "receiver", "k", "--out", "."], 130),
    ],
    ids=["encode", "decode-png", "decode-dcm", "keygen"],
)
def test_ctrl_c_while_writing_leaves_no_partial_file(argv, expected_code, world, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of writing the output (after the temporary file exists): nothing is left."""
    monkeypatch.setattr(os, "fsync", _interrupt(KeyboardInterrupt()))
    before = _snapshot(world, tmp_path)
    code, err = _run(argv, world, tmp_path, capsys, monkeypatch)
    monkeypatch.undo()
    assert code == expected_code
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))
    assert "interrupted" in err


def test_ctrl_c_during_compression(world, tmp_path, capsys, monkeypatch):
    import radseal.pipeline

    monkeypatch.setattr(radseal.pipeline, "seal_image", _interrupt(KeyboardInterrupt()))
    before = _snapshot(world, tmp_path)
    code, err = _run(enc(), world, tmp_path, capsys, monkeypatch)
    assert code == 130
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL,
                    reason="needs the default SIGTERM disposition in the test process")
def test_sigterm_cleans_up_like_ctrl_c(world, tmp_path, capsys, monkeypatch):
    """A service manager's SIGTERM unwinds too: the temporary file is removed, one error line."""
    real_fsync = os.fsync

    def terminate(fd):
        os.kill(os.getpid(), signal.SIGTERM)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", terminate)
    before = _snapshot(world, tmp_path)
    code, err = _run(enc(), world, tmp_path, capsys, monkeypatch)
    monkeypatch.undo()
    assert code == 143 and "terminated" in err
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_interrupted_demo_removes_its_outputs(world, tmp_path, capsys, monkeypatch):
    import radseal.pipeline

    monkeypatch.setattr(radseal.pipeline, "seal_image", _interrupt(KeyboardInterrupt()))
    before = _snapshot(world, tmp_path)
    code, err = _run(["demo", "--out", "demo/sub", "--sample", "RG3"], world, tmp_path, capsys, monkeypatch)
    assert code == 130
    _assert_clean_failure(code, err, before, _snapshot(world, tmp_path))


# --------------------------------------------------------------------------- the last line of defence


def test_last_line_of_defence(capsys, monkeypatch):
    from radseal import cli

    def fake_parser(exc):
        real = cli.build_parser

        def build():
            parser = real()
            parser.set_defaults(func=_interrupt(exc))
            for action in parser._subparsers._group_actions:
                for sub in action.choices.values():
                    sub.set_defaults(func=_interrupt(exc))
            return parser

        return build

    monkeypatch.setattr(cli, "build_parser", fake_parser(IsADirectoryError(21, "Is a directory", "/x/out.png")))
    assert cli.main(["inspect", "x.rsl"]) == 1
    assert capsys.readouterr().err == "radseal: error: /x/out.png: Is a directory\n"

    monkeypatch.setattr(cli, "build_parser", fake_parser(ValueError("line one\nline two")))
    assert cli.main(["inspect", "x.rsl"]) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("radseal: error: unexpected ValueError: line one line two")

    monkeypatch.setenv("RADSEAL_DEBUG", "1")
    with pytest.raises(ValueError):
        cli.main(["inspect", "x.rsl"])


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_on_stdout_is_one_line(world):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "radseal", "inspect", str(world / "ok.rsl")],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("radseal: error:"), proc.stderr
