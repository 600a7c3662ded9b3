"""``radseal gateway``: a DICOM Storage SCP in front of the outbox, driven by real DICOM clients.

Clients: dcmtk's ``storescu`` and ``echoscu`` (Debian package dcmtk; an
implementation independent of pynetdicom) and pynetdicom as SCU. The
receiver is a real ``radseal serve`` process with a folder store; the
gateway is a real ``radseal gateway`` process (SIGKILLed and restarted in
the drill).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from radseal.io import read_image
from radseal.io.samples import sample_path
from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key
from radseal.transport.drill import free_port
from radseal.transport.outbox import Outbox

pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom not installed (a core dependency: pip install -e .)")

from test_transport_cli import codec_available, start_serve  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
STORESCU = shutil.which("storescu")
ECHOSCU = shutil.which("echoscu")
CR = "1.2.840.10008.5.1.4.1.1.1"
GATEWAY_AE = "RADSEAL"
ROOMS = ("CR_ROOM1", "DX_ROOM2")


def need_dcmtk() -> None:
    if STORESCU is None or ECHOSCU is None:
        if IN_CI:
            pytest.fail("dcmtk's storescu/echoscu missing in CI (scripts/install.sh installs Debian package dcmtk)")
        pytest.skip("dcmtk not installed (Debian package dcmtk; scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Keys, a real receiver (``radseal serve``, folder store) and its URL."""
    reason = codec_available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("gateway")
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, root / "receiver.key")
    save_public_key(receiver.public_key(), root / "receiver.pub")
    save_private_key(device, root / "device.key")
    (root / "devices").mkdir()
    save_public_key(device.public_key(), root / "devices" / "device.pub")
    port = free_port()
    proc = start_serve(root, port)
    yield root, f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def make_instances(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` small CR instances cut from the RG1 and RG3 samples, each with its own SOP Instance UID."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [pydicom.dcmread(sample_path(name)) for name in ("RG1", "RG3")]
    arrays = [ds.pixel_array for ds in sources]
    paths = []
    for i in range(n):
        ds = sources[i % 2].copy()
        arr = arrays[i % 2]
        h, w = 40 + 8 * (i % 3), 48
        y, x = int(rng.integers(0, arr.shape[0] - h)), int(rng.integers(0, arr.shape[1] - w))
        crop = np.ascontiguousarray(arr[y : y + h, x : x + w])
        ds.Rows, ds.Columns = h, w
        ds.PixelData = crop.astype(arr.dtype).tobytes()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"img{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class GatewayProcess:
    def __init__(self, root: Path, url: str, outbox: Path, allow=ROOMS) -> None:
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "radseal", "gateway", "--ae-title", GATEWAY_AE, "--port", str(self.port),
                    "--to", url, "--recipient", str(root / "receiver.pub"), "--sign", str(root / "device.key"),
                    "--outbox", str(outbox), "--backoff", "0.2"]
        for ae in allow:
            self.cmd += ["--allow-ae", ae]
        self.log = outbox.parent / f"{outbox.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        seen = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"radseal gateway exited: {self.log.read_text()[-2000:]}")
            if b"radseal gateway: DICOM SCP" in self.log.read_bytes()[seen:]:
                return
            time.sleep(0.1)
        pytest.fail("radseal gateway did not start in 60 s")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def scu_store(port: int, datasets, calling: str, results: dict, progress: threading.Event | None = None,
              after: int = 0) -> None:
    """Send datasets with pynetdicom in one association; ``results[SOP Instance UID] = status`` per answer."""
    ae = pynetdicom.AE(ae_title=calling)
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in datasets if "TransferSyntaxUID" in ds.file_meta}
    for syntax in sorted(syntaxes | {ExplicitVRLittleEndian}):  # one context each: the SCP accepts one syntax per context
        ae.add_requested_context(CR, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    if not assoc.is_established:
        return
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status or "Status" not in status:
                break  # aborted: no answer
            results[ds.SOPInstanceUID] = (int(status.Status), str(status.get("ErrorComment", "")))
            if progress is not None and sum(s == 0 for s, _ in results.values()) >= after:
                progress.set()
    finally:
        if assoc.is_established:
            assoc.release()


def storescu(port: int, calling: str, paths) -> tuple[int, int, str]:
    """(exit status, Success answers, log) of one dcmtk storescu run."""
    run = subprocess.run([STORESCU, "-v", "-aet", calling, "-aec", GATEWAY_AE, "127.0.0.1", str(port), *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    text = run.stdout + run.stderr
    return run.returncode, len(re.findall(r"Received Store Response \(Success\)", text)), text


def stored_by_source(store: Path) -> dict[str, list[Path]]:
    """Stored objects, by the SOP Instance UID of the instance they were derived from."""
    found: dict[str, list[Path]] = {}
    for path in sorted(store.glob("*/*/*.dcm")):
        ds = pydicom.dcmread(path)
        found.setdefault(str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID), []).append(path)
    return found


def local_decode(path: Path) -> np.ndarray:
    from radseal.pipeline import default_codec

    codec = default_codec()
    return np.asarray(codec.decompress(codec.compress(read_image(path))).pixels)


def wait_delivered(outbox: Path, n: int, timeout: float = 60.0) -> int:
    """Delivered messages in the outbox, once ``n`` or at the timeout (a receipt is recorded after the store)."""
    deadline = time.monotonic() + timeout
    while (count := Outbox(outbox).counts()["delivered"]) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def test_echo_store_refusals_and_failure_statuses(world, tmp_path):
    need_dcmtk()
    root, url = world
    paths = make_instances(tmp_path / "in", 3, seed=1)
    gateway = GatewayProcess(root, url, tmp_path / "outbox")
    gateway.start()
    try:
        assert subprocess.run([ECHOSCU, "-aet", "CR_ROOM1", "-aec", GATEWAY_AE, "127.0.0.1", str(gateway.port)],
                              capture_output=True, timeout=30).returncode == 0
        # an AE title outside --allow-ae, and a wrong called AE title, are rejected at association
        assert subprocess.run([ECHOSCU, "-aet", "INTRUDER", "-aec", GATEWAY_AE, "127.0.0.1", str(gateway.port)],
                              capture_output=True, timeout=30).returncode != 0
        ae = pynetdicom.AE(ae_title="INTRUDER")
        ae.add_requested_context(CR, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title=GATEWAY_AE)
        assert assoc.is_rejected
        ae = pynetdicom.AE(ae_title="CR_ROOM1")
        ae.add_requested_context(CR, ExplicitVRLittleEndian)
        assert ae.associate("127.0.0.1", gateway.port, ae_title="SOMEONE").is_rejected

        code, ok, text = storescu(gateway.port, "CR_ROOM1", paths)
        assert code == 0 and ok == 3, text

        # garbage: pixel data shorter than the image, and a colour image; each gets a failure status with a reason
        broken = pydicom.dcmread(paths[0])
        broken.SOPInstanceUID = generate_uid()
        broken.PixelData = b"\x00\x01" * 10
        colour = pydicom.dcmread(paths[1])
        colour.SOPInstanceUID = generate_uid()
        colour.PhotometricInterpretation = "RGB"
        rle = pydicom.dcmread(paths[2])
        rle.SOPInstanceUID = generate_uid()
        rle.compress(RLELossless)  # a compressed transfer syntax, negotiated as such
        results: dict = {}
        scu_store(gateway.port, [rle], "CR_ROOM1", results)
        assert results[rle.SOPInstanceUID] == (0, ""), results
        scu_store(gateway.port, [broken, colour], "CR_ROOM1", results)
        status, comment = results[broken.SOPInstanceUID]
        assert status == 0xC000 and "pixel data" in comment.lower(), comment
        status, comment = results[colour.SOPInstanceUID]
        assert status == 0xC000 and "Photometric" in comment, comment
        assert wait_delivered(tmp_path / "outbox", 4) == 4
    finally:
        assert gateway.stop() == 0  # SIGTERM: a clean stop
    log = gateway.log.read_text()
    assert "radseal gateway stopped" in log and "Traceback" not in log
    assert "calling AE 'INTRUDER' is not in --allow-ae" in log and "called AE title is not 'RADSEAL'" in log and "0xC000 unsupported Photometric" in log
    outbox = Outbox(tmp_path / "outbox")
    assert outbox.counts() == {"pending": 0, "delivered": 4, "refused": 0}
    rle_path = tmp_path / "rle.dcm"
    rle.save_as(rle_path)
    for path in [*paths, rle_path]:
        src = pydicom.dcmread(path).SOPInstanceUID
        [stored] = stored_by_source(root / "store")[src]
        assert np.array_equal(pydicom.dcmread(stored).pixel_array, local_decode(path))


def test_dataset_that_does_not_match_its_request_is_refused(world, tmp_path):
    from radseal.seal import load_device_key, load_receiver_public_key
    from radseal.transport.gateway import CANNOT_UNDERSTAND, DATASET_MISMATCH, SUCCESS, Gateway

    root, url = world
    [path] = make_instances(tmp_path / "in", 1, seed=2)
    outbox = Outbox(tmp_path / "outbox")
    gateway = Gateway(outbox, load_receiver_public_key(root / "receiver.pub"), load_device_key(root / "device.key"),
                      to=url)
    data = path.read_bytes()
    uid = pydicom.dcmread(path).SOPInstanceUID
    assert gateway.accept(data, sop_class="1.2.840.10008.5.1.4.1.1.1.1", sop_instance=uid).status == DATASET_MISMATCH
    assert gateway.accept(data, sop_class=CR, sop_instance="1.2.3").status == DATASET_MISMATCH
    assert sum(outbox.counts().values()) == 0
    first = gateway.accept(data, sop_class=CR, sop_instance=uid)
    again = gateway.accept(data, sop_class=CR, sop_instance=uid)  # sent again: one message
    assert first.status == again.status == SUCCESS and first.new and not again.new
    assert first.message_id == again.message_id and outbox.counts()["pending"] == 1
    gateway.stop()
    small = Gateway(outbox, load_receiver_public_key(root / "receiver.pub"), load_device_key(root / "device.key"),
                    to=url, max_pixels=40 * 40)
    [other] = make_instances(tmp_path / "in2", 1, seed=4)
    refused = small.accept(other.read_bytes(), sop_class=CR, sop_instance=pydicom.dcmread(other).SOPInstanceUID)
    assert refused.status == CANNOT_UNDERSTAND and "larger than 1600 pixels" in refused.comment
    small.stop()


@pytest.mark.slow
def test_drill_two_modalities_gateway_killed_mid_stream(world, tmp_path):
    """CI-sized drill: 50 instances from two calling AEs (pynetdicom and dcmtk's storescu at once), the
    gateway SIGKILLed mid-stream and restarted, each modality sending again what was not answered
    Success (storescu: its whole batch). Every instance ends up stored exactly once, pixel-identical
    to a local decode; the instances answered Success before the kill were never sent again."""
    need_dcmtk()
    root, url = world
    store = root / "store"
    paths = make_instances(tmp_path / "in", 50, seed=3)
    scu_paths, dcmtk_paths = paths[:25], paths[25:]
    scu_sets = [pydicom.dcmread(p) for p in scu_paths]
    gateway = GatewayProcess(root, url, tmp_path / "outbox")
    gateway.start()
    results: dict = {}
    progress = threading.Event()
    scu = threading.Thread(target=scu_store, args=(gateway.port, scu_sets, ROOMS[0], results, progress, 8))
    dcmtk_first: list = []
    dcmtk = threading.Thread(target=lambda: dcmtk_first.append(storescu(gateway.port, ROOMS[1], dcmtk_paths)))
    scu.start()
    dcmtk.start()
    assert progress.wait(60), "no progress before the kill"
    gateway.kill()
    scu.join(60)
    dcmtk.join(120)
    answered_before_kill = {uid for uid, (status, _) in results.items() if status == 0}
    assert 8 <= len(answered_before_kill) < 25, "the kill did not land mid-stream"

    gateway.start()  # same outbox: what was committed is delivered
    try:
        resend = [ds for ds in scu_sets if ds.SOPInstanceUID not in answered_before_kill]
        scu_store(gateway.port, resend, ROOMS[0], results)
        code, ok, text = storescu(gateway.port, ROOMS[1], dcmtk_paths)
        assert code == 0 and ok == 25, text
        assert all(status == 0 for status, _ in results.values()) and len(results) == 25
        assert wait_delivered(tmp_path / "outbox", 50, timeout=90) == 50
    finally:
        assert gateway.stop() == 0

    found = stored_by_source(store)
    for path in paths:
        uid = pydicom.dcmread(path).SOPInstanceUID
        assert len(found.get(uid, [])) == 1, f"instance {uid} stored {len(found.get(uid, []))} times"
        assert np.array_equal(pydicom.dcmread(found[uid][0]).pixel_array, local_decode(path))
    counts = Outbox(tmp_path / "outbox").counts()
    assert counts == {"pending": 0, "delivered": 50, "refused": 0}, counts
    log = gateway.log.read_text()
    print(f"drill: pynetdicom {len(answered_before_kill)}/25 and storescu {dcmtk_first[0][1]}/25 answered Success "
          f"before the kill; {log.count('known   C-STORE')} resent instances recognised; 50 stored once")


def test_gateway_usage_errors_are_one_line(world, tmp_path, capsys):
    import socket

    from radseal.cli import main

    root, url = world
    base = ["gateway", "--to", url, "--recipient", str(root / "receiver.pub"), "--sign", str(root / "device.key"),
            "--outbox", str(tmp_path / "outbox")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(base + ["--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("radseal: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1, err
    assert not (tmp_path / "outbox").exists()  # nothing left behind by a start that failed
    with pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--help"])
    assert exit_info.value.code == 0 and "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(base + ["--allow-ae", "A_TITLE_LONGER_THAN_16"])
    assert exit_info.value.code == 2 and "invalid AE title" in capsys.readouterr().err


def test_background_delivery_sets_a_refused_message_aside(world, tmp_path):
    """A receiver that does not trust this device answers 403: the gateway's delivery sets the message
    aside as refused, with the reason, and says so in its log (it does not retry it for ever)."""
    from radseal.seal import load_device_key
    from radseal.transport.gateway import SUCCESS, Gateway

    root, _ = world
    other = tmp_path / "other"
    (other / "devices").mkdir(parents=True)
    receiver = ReceiverKey.generate()
    save_private_key(receiver, other / "receiver.key")
    save_public_key(DeviceKey.generate().public_key(), other / "devices" / "someone-else.pub")
    port = free_port()
    proc = start_serve(other, port)
    lines: list[str] = []
    try:
        outbox = Outbox(tmp_path / "outbox")
        gateway = Gateway(outbox, receiver.public_key(), load_device_key(root / "device.key"),
                          to=f"http://127.0.0.1:{port}", report=lines.append)
        [path] = make_instances(tmp_path / "in", 1, seed=5)
        accepted = gateway.accept(path.read_bytes(), sop_class=CR, sop_instance=pydicom.dcmread(path).SOPInstanceUID)
        assert accepted.status == SUCCESS
        worker = threading.Thread(target=gateway.deliver_forever)
        worker.start()
        deadline = time.monotonic() + 30
        while outbox.state(accepted.message_id) != "refused" and time.monotonic() < deadline:
            time.sleep(0.1)
        gateway.stop()
        worker.join(30)
        assert not worker.is_alive()
    finally:
        proc.terminate()
        proc.wait(10)
    [row] = outbox.rows(("refused",))
    assert row.refused_status == 403 and row.refused_code == "unknown_sender"
    assert any(line.startswith(f"refused message {accepted.message_id}") for line in lines), lines
