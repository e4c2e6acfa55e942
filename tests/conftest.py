"""Shared fixtures: one local Ray per test session (ray.init costs 3-6 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray, started once; tests needing their own cluster use a subprocess."""
    import ray

    # Tune state saved every second (the ledger covers the rest), Ray's own table off.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Token auth stays on (the default of a local ray.init); no dashboard is started.
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
