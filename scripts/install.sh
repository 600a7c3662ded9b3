#!/usr/bin/env bash
# Install everything radseal and its tests need on a fresh Debian machine:
# system packages (Orthanc PACS and its DICOMweb plugin, dicom3tools' dciodvfy, dcmtk,
# headless Chromium, PostgreSQL, HAProxy)
# and a virtual environment in .venv with radseal and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
# dcmtk's storescu/echoscu: an independent DICOM client for the gateway's tests
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
# Orthanc's DICOMweb plugin (STOW-RS), for the dicomweb+http:// store's tests
dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# a fleet of receivers: the shared receipt index (PostgreSQL) and the load balancer (HAProxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# Orthanc with its index in PostgreSQL (the PACS behind the fleet drill)
dpkg -s orthanc-postgresql >/dev/null 2>&1 || need+=(orthanc-postgresql)
# the compiled codec engine (csrc/) needs a C compiler and the Python headers
command -v gcc >/dev/null 2>&1 || need+=(gcc)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# '.[test]' is the core plus every extra (neural, train, paper, evaluate: PyTorch, SciPy,
# scikit-learn, matplotlib, imagecodecs) and the test tools. torch==2.13.0 is the CPU
# build; the pin keeps pip from pulling a CUDA build. An edge device needs only the
# core: pip install radseal (README, "Light install").
.venv/bin/python -m pip install -q -e '.[test]'
echo "radseal installed in .venv (activate with: source .venv/bin/activate)"
