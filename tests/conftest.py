"""Shared fixtures: one local Ray per test session (ray.init costs 3-6 s), fault injection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults import ENV as FAULTS_ENV
from tests.faults import Faults


@pytest.fixture(scope="session")
def faults_dir(tmp_path_factory) -> Path:
    """Where tests write fault plans; every Ray worker of the session reads it (tests.faults)."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def ray_session(faults_dir):
    """A 2-CPU local Ray, started once; tests needing their own cluster use a subprocess.

    Its workers run ``tests.faults.install`` at start-up, so a test can make trials fail
    or kill their worker through the ``faults`` fixture.
    """
    import ray

    # The driver's Tune settings (sweep.search.rayinit.DRIVER_ENV): Ray's own table off, Tune's
    # experiment state (never read back) saved once a minute.
    from sweep.search.rayinit import DRIVER_ENV, LOCAL_RAY_ENV

    for key, value in {**DRIVER_ENV, **LOCAL_RAY_ENV}.items():  # no idle workers at start
        os.environ.setdefault(key, value)
    root = str(Path(__file__).resolve().parents[1])
    plugins = str(Path(__file__).resolve().parent / "plugins")  # a family from outside sweep/
    path = os.pathsep.join(p for p in (root, plugins, os.environ.get("PYTHONPATH", "")) if p)
    # Token auth stays on (the default of a local ray.init); no dashboard is started.
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "tests.faults.install",
                              "env_vars": {FAULTS_ENV: str(faults_dir), "PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture
def faults(ray_session, faults_dir):
    """Fault plans for this test's sweeps (``faults.fail`` / ``faults.kill``), cleared after."""
    plans = Faults(faults_dir)
    yield plans
    plans.clear()
