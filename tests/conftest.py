"""Shared fixtures: real radiographs from pydicom-data, and the optional shared data set."""

from __future__ import annotations

import pytest

from radseal.io.dataset import default_data_dir
from radseal.io.samples import sample_path


@pytest.fixture(scope="session")
def rg1_path():
    return sample_path("RG1")


@pytest.fixture(scope="session")
def rg3_path():
    return sample_path("RG3")


@pytest.fixture(scope="session")
def cxr_dir():
    """../shared/data/cxr, or a skip where it is absent (a user's machine)."""
    d = default_data_dir()
    if d is None or not (d / "train").is_dir():
        pytest.skip("needs the chest X-ray set at ../shared/data/cxr (or $RADSEAL_DATA); not present here")
    return d
