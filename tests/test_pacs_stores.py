"""The PACS stores against a real Orthanc: C-STORE (``dicom://``) and DICOMweb STOW-RS (``dicomweb+http://``).

The fixture starts ``Orthanc`` (Debian package orthanc) with its DICOM
server on a free loopback port (any calling AE may store) and the DICOMweb
plugin (Debian package orthanc-dicomweb) loaded; each stored object is read
back through Orthanc's own REST API and compared with what was sent (SOP
Instance UID, pixel data).
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from radseal.io.derived import derived_dataset
from radseal.io.dicom import encode_dicom
from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey, save_private_key, save_public_key
from radseal.transport.drill import BitDropCodec, drill_images, free_port
from radseal.transport.errors import StoreError
from radseal.transport.receiver import create_app
from radseal.transport.stores import DicomStore, DicomWebStore, OrthancStore, StoredObject, open_store

IN_CI = bool(os.environ.get("CI"))
ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
DICOMWEB_PLUGIN = next(iter(sorted(glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*"))
                            + sorted(glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*"))), None)


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} missing in CI (scripts/install.sh installs it)")
    pytest.skip(f"{what} not installed (scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """(REST URL, DICOM port) of an Orthanc with its DICOM server and DICOMweb plugin on loopback."""
    if ORTHANC is None:
        _missing("Orthanc (Debian package orthanc)")
    if DICOMWEB_PLUGIN is None:
        _missing("Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb)")
    work = tmp_path_factory.mktemp("orthanc-pacs")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "radseal-test-pacs",
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,  # any calling AE title may store (the receiver's is RADSEAL)
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/dicom-web/studies", timeout=1).status_code in (200, 204):
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start; log: {(work / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield url, dicom_port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def pacs(orthanc):
    """The module's Orthanc, emptied so that each test counts only its own objects."""
    url, _ = orthanc
    for patient in httpx.get(url + "/patients").json():
        httpx.delete(f"{url}/patients/{patient}")
    return orthanc


def derived(seed: int, tag: str):
    img = drill_images(1, size=32, seed=seed)[0]
    ds = derived_dataset(img, img.source, payload_bytes=100, model_id="m", uid_seed=f"pacs-test-{tag}")
    return img, ds, StoredObject(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def back_from_orthanc(url: str, sop_instance_uid: str) -> pydicom.Dataset:
    data = OrthancStore(url).get(sop_instance_uid)
    assert data is not None, f"{sop_instance_uid} not in Orthanc"
    return pydicom.dcmread(io.BytesIO(data))


def test_dicom_store_c_store_is_idempotent_and_comes_back_identical(pacs):
    url, port = pacs
    img, ds, obj = derived(11, "cstore")
    store = open_store(f"dicom://ORTHANC@127.0.0.1:{port}")
    assert isinstance(store, DicomStore) and store.check()
    first = store.put(encode_dicom(ds), obj)
    second = store.put(encode_dicom(ds), obj)
    assert first == second
    assert OrthancStore(url).count() == 1
    back = back_from_orthanc(url, ds.SOPInstanceUID)
    assert back.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(back.pixel_array, img.pixels)


def test_dicom_store_failures_are_store_errors(pacs):
    _, port = pacs
    _, ds, obj = derived(12, "cstore-fail")
    with pytest.raises(StoreError, match="association"):  # Orthanc checks the called AE title
        open_store(f"dicom://NOT_ORTHANC@127.0.0.1:{port}").put(encode_dicom(ds), obj)
    with pytest.raises(StoreError, match="association"):  # nothing listens there
        DicomStore("127.0.0.1", free_port(), "ORTHANC", timeout=5).check()


def test_dicomweb_store_stow_rs_is_idempotent_and_comes_back_identical(pacs):
    url, _ = pacs
    img, ds, obj = derived(13, "stow")
    store = open_store(f"dicomweb+{url}/dicom-web")
    assert isinstance(store, DicomWebStore) and store.check()
    assert store.put(encode_dicom(ds), obj) == store.put(encode_dicom(ds), obj)
    assert OrthancStore(url).count() == 1 and store.count() == 1
    for data in (store.get(ds.SOPInstanceUID), OrthancStore(url).get(ds.SOPInstanceUID)):  # WADO-RS, REST
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(back.pixel_array, img.pixels)
    assert store.get("1.2.3.4") is None
    with pytest.raises(StoreError, match="HTTP 404"):
        DicomWebStore(url + "/no-such-dicom-web").put(encode_dicom(ds), obj)
    with pytest.raises(StoreError, match="unreachable"):
        DicomWebStore(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=2).check()


@pytest.mark.parametrize("kind", ["dicom", "dicomweb"])
def test_receiver_stores_into_the_pacs_once(pacs, kind, tmp_path):
    url, port = pacs
    spec = f"dicom://ORTHANC@127.0.0.1:{port}" if kind == "dicom" else f"dicomweb+{url}/dicom-web"
    receiver_key, device_key = ReceiverKey.generate(), DeviceKey.generate()
    codec = BitDropCodec()
    client = TestClient(create_app(receiver_key, [device_key.public_key()], open_store(spec),
                                   tmp_path / "index.sqlite", codec=codec))
    images = drill_images(3, size=32, seed=14)
    sealed = [seal_image(img, receiver_key.public_key(), device_key, codec=codec).data for img in images]
    receipts = [client.post("/v1/messages", content=data).json() for data in sealed]
    assert client.post("/v1/messages", content=sealed[0]).json() == receipts[0]  # duplicate: stored once
    assert OrthancStore(url).count() == 3 and all(r["store"] == kind for r in receipts)
    for data, receipt in zip(sealed, receipts):
        local = open_image(data, receiver_key, device_key.public_key(), codec=codec)
        back = back_from_orthanc(url, receipt["sop_instance_uid"])
        assert np.array_equal(back.pixel_array, local.image.pixels)


def test_receiver_answers_503_when_the_pacs_is_down_and_stores_on_retry(pacs, tmp_path):
    url, port = pacs
    receiver_key, device_key = ReceiverKey.generate(), DeviceKey.generate()
    codec = BitDropCodec()
    down = TestClient(create_app(receiver_key, [device_key.public_key()],
                                 DicomStore("127.0.0.1", free_port(), "ORTHANC", timeout=5),
                                 tmp_path / "index.sqlite", codec=codec))
    img = drill_images(1, size=32, seed=15)[0]
    sealed = seal_image(img, receiver_key.public_key(), device_key, codec=codec).data
    answer = down.post("/v1/messages", content=sealed)
    assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
    up = TestClient(create_app(receiver_key, [device_key.public_key()], open_store(f"dicom://ORTHANC@127.0.0.1:{port}"),
                               tmp_path / "index.sqlite", codec=codec))
    receipt = up.post("/v1/messages", content=sealed).json()
    assert back_from_orthanc(url, receipt["sop_instance_uid"]).SOPInstanceUID == receipt["sop_instance_uid"]


def test_serve_cli_stores_through_c_store(pacs, tmp_path):
    """``radseal serve --store dicom://...`` (the real command, the shipped codec) into Orthanc's DICOM port."""
    from test_transport_cli import codec_available

    reason = codec_available()
    if reason:
        pytest.skip(reason)
    url, port = pacs
    receiver, device = ReceiverKey.generate(), DeviceKey.generate()
    save_private_key(receiver, tmp_path / "receiver.key")
    (tmp_path / "devices").mkdir()
    save_public_key(device.public_key(), tmp_path / "devices" / "device.pub")
    http_port = free_port()
    cmd = [sys.executable, "-m", "radseal", "serve", "--key", str(tmp_path / "receiver.key"),
           "--trust", str(tmp_path / "devices"), "--store", f"dicom://ORTHANC@127.0.0.1:{port}?calling=RADSEAL_RX",
           "--state", str(tmp_path / "state"), "--port", str(http_port), "--diagnosis", "off"]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.1)
        img = drill_images(1, size=48, seed=16)[0]
        sealed = seal_image(img, receiver.public_key(), device).data
        receipt = httpx.post(f"http://127.0.0.1:{http_port}/v1/messages", content=sealed, timeout=60).json()
        local = open_image(sealed, receiver, device.public_key())
        back = back_from_orthanc(url, receipt["sop_instance_uid"])
        assert receipt["store"] == "dicom" and np.array_equal(back.pixel_array, local.image.pixels)
    finally:
        proc.terminate()
        proc.wait(20)
    # a PACS that does not answer stops the start with one line, no traceback
    cmd[cmd.index("--store") + 1] = f"dicom://ORTHANC@127.0.0.1:{free_port()}"
    cmd[cmd.index("--port") + 1] = "0"
    bad = subprocess.run(cmd,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.startswith("radseal: error: DICOM store") and "Traceback" not in bad.stderr


def test_dicom_store_failure_status_is_a_store_error(tmp_path):
    """A PACS that answers C-STORE with a failure status (here a pynetdicom SCP out of resources) is a
    StoreError naming the status and comment, so the receiver answers 503 and the sender retries."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt

    _, ds, obj = derived(17, "cstore-status")

    def refuse(event):
        answer = Dataset()
        answer.Status = 0xA700
        answer.ErrorComment = "disk full"
        return answer

    scp = AE(ae_title="FULLPACS")
    scp.add_supported_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, refuse)])
    try:
        with pytest.raises(StoreError, match=r"status 0xA700 \(disk full\)"):
            open_store(f"dicom://FULLPACS@127.0.0.1:{port}").put(encode_dicom(ds), obj)
    finally:
        server.shutdown()


@pytest.mark.parametrize("spec", ["dicom://127.0.0.1:104", "dicom://PACS@127.0.0.1", "dicom://PACS@host:99999",
                                  "dicom://A_TITLE_LONGER_THAN_16@host:104", "dicom://PACS@host:104?calling=",
                                  "dicomweb://host/dicom-web"])
def test_malformed_pacs_store_urls_are_one_line_errors(spec, tmp_path, capsys):
    from radseal.cli import main

    with pytest.raises(StoreError):
        open_store(spec)
    (tmp_path / "devices").mkdir()
    save_private_key(ReceiverKey.generate(), tmp_path / "receiver.key")
    code = main(["serve", "--key", str(tmp_path / "receiver.key"), "--trust", str(tmp_path / "devices"),
                 "--store", spec, "--state", str(tmp_path / "state"), "--port", "0"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("radseal: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "state").exists()
