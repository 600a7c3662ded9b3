"""Fault test (bounded form of benchmarks/transport_fault.py).

Thirty small images go through a proxy that cuts connections while the
receiver process is SIGKILLed and restarted at random moments: each image
must end stored exactly once, identical to a local decode, with no partial
file left behind.
"""

from __future__ import annotations

import pytest

from radseal.transport.drill import run_fault_drill


@pytest.mark.slow
def test_every_image_stored_exactly_once_despite_kills_and_cuts(tmp_path):
    result = run_fault_drill(tmp_path, n_images=30, senders=2, kills=3, cut_probability=0.5, seed=11)
    assert result.ok, result.problems
    assert result.kills == 3 and result.receiver_starts == 5  # 1 + 3 restarts + the final recovery start
    assert result.proxy_cuts > 0 and result.retries > 0
    assert result.index_rows == result.stored_objects == result.archived == result.delivered == 30
    assert result.duplicates_in_store == 0 and result.pixel_mismatches == 0
    assert result.partial_files_after_recovery == 0
