"""The Orthanc store, against a real Orthanc (Debian package ``orthanc``) on loopback.

The fixture starts ``Orthanc`` with a temporary configuration (HTTP on a free
loopback port, DICOM server off, no remote access, no authentication) and
skips with a reason where the binary is not installed.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from radseal.pipeline import open_image, seal_image
from radseal.seal import DeviceKey, ReceiverKey
from radseal.io.derived import derived_dataset
from radseal.io.dicom import encode_dicom
from radseal.transport.drill import BitDropCodec, drill_images, free_port
from radseal.transport.receiver import create_app
from radseal.transport.stores import OrthancStore, StoredObject, open_store

ORTHANC = shutil.which("Orthanc") or (shutil.which("Orthanc", path="/usr/sbin:/usr/bin"))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if ORTHANC is None:
        pytest.skip("Orthanc not installed (Debian package orthanc; scripts/install.sh installs it)")
    work = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "radseal-test",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": 0,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/system", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start; log: {(work / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def empty_orthanc(orthanc):
    """The module's Orthanc, emptied so that each test counts only its own objects."""
    for patient in httpx.get(orthanc + "/patients").json():
        httpx.delete(f"{orthanc}/patients/{patient}")
    return orthanc


@pytest.fixture(scope="module")
def keys():
    return ReceiverKey.generate(), DeviceKey.generate()


def test_put_is_idempotent_and_object_comes_back(empty_orthanc):
    img = drill_images(1, size=32, seed=5)[0]
    ds = derived_dataset(img, img.source, payload_bytes=100, model_id="m", uid_seed="orthanc-test")
    store = OrthancStore(empty_orthanc)
    obj = StoredObject(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    first = store.put(encode_dicom(ds), obj)
    second = store.put(encode_dicom(ds), obj)
    assert first == second and first.startswith("orthanc:")
    assert store.count() == 1
    back = pydicom.dcmread(io.BytesIO(store.get(ds.SOPInstanceUID)))
    assert back.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(back.pixel_array, img.pixels)
    assert store.get("1.2.3.4") is None


def test_receiver_stores_into_orthanc_once(empty_orthanc, keys, tmp_path):
    receiver_key, device_key = keys
    codec = BitDropCodec()
    store = open_store("orthanc+" + empty_orthanc)
    client = TestClient(create_app(receiver_key, [device_key.public_key()], store, tmp_path / "index.sqlite", codec=codec))
    images = drill_images(3, size=32, seed=6)
    sealed = [seal_image(img, receiver_key.public_key(), device_key, codec=codec).data for img in images]
    receipts = [client.post("/v1/messages", content=data).json() for data in sealed]
    assert client.post("/v1/messages", content=sealed[0]).json() == receipts[0]  # duplicate
    assert store.count() == 3 and all(r["store"] == "orthanc" for r in receipts)
    for data, receipt in zip(sealed, receipts):
        local = open_image(data, receiver_key, device_key.public_key(), codec=codec)
        stored = pydicom.dcmread(io.BytesIO(store.get(receipt["sop_instance_uid"])))
        assert np.array_equal(stored.pixel_array, local.image.pixels)
        assert stored.LossyImageCompression == "01"


def test_check_names_the_version_and_fails_clearly_without_orthanc(orthanc):
    assert OrthancStore(orthanc).check()
    from radseal.transport.errors import StoreError

    with pytest.raises(StoreError, match="unreachable"):
        OrthancStore(f"http://127.0.0.1:{free_port()}", timeout=2).check()
