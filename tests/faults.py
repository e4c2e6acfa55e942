"""Test-only fault injection into sweep trials, also inside Ray workers.

``conftest.ray_session`` starts Ray with ``worker_process_setup_hook = "tests.faults.install"``
and ``COLLAPSE_SWEEP_TEST_FAULTS=<a session directory>`` in every worker's environment.
``install`` wraps ``Chain.step`` (one generation; a sweep trial drives its chain with it) so
that it consults the plan a test wrote for its run (``Faults.fail`` / ``Faults.kill`` /
``Faults.slow``) first. Production
code reads no fault files: without this hook a plan is never looked at.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

ENV = "COLLAPSE_SWEEP_TEST_FAULTS"


class Faults:
    """The plans of one test, by run name (the sweep's ``name``); removed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def fail(self, run: str, *, when: dict[str, Any], at_generation: int = 1) -> None:
        """Trials of ``run`` whose params include ``when`` raise before that generation."""
        self._write(run, {"fail_when": when, "fail_at": at_generation})

    def kill(self, run: str, *, after_generation: int) -> None:
        """Each chain of ``run`` SIGKILLs its worker once, after that generation's checkpoint."""
        self._write(run, {"kill_after": after_generation})

    def slow(self, run: str, *, seconds_per_generation: float) -> None:
        """Each generation of ``run`` sleeps first: trials then outlast Ray's scheduling latency."""
        self._write(run, {"sleep": seconds_per_generation})

    def killed(self, run: str) -> list[Path]:
        """One marker per chain that was killed."""
        return sorted(self.directory.glob(f"{run}.killed.*"))

    def clear(self) -> None:
        for path in self.directory.glob("*"):
            path.unlink()

    def _write(self, run: str, plan: dict[str, Any]) -> None:
        tmp = self.directory / f".{run}.tmp"
        tmp.write_text(json.dumps(plan))
        tmp.replace(self.directory / f"{run}.json")


def install() -> None:
    """Ray worker setup hook (and usable in the test process): wrap ``Chain.step``."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    from sweep.engine.chain import Chain

    if getattr(Chain.step, "_faulty", False):
        return
    original = Chain.step

    def step(self: Chain, *args: Any, **kwargs: Any) -> dict[str, Any]:
        _apply(Path(directory), self)
        return original(self, *args, **kwargs)

    step._faulty = True  # type: ignore[attr-defined]
    Chain.step = step  # type: ignore[method-assign]


def _config_value(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _apply(directory: Path, chain: Any) -> None:
    plan_file = directory / f"{chain.config.name}.json"
    if not plan_file.is_file():
        return
    plan = json.loads(plan_file.read_text())
    generation = chain.generation  # the generation about to be trained
    time.sleep(plan.get("sleep", 0.0))
    when = plan.get("fail_when")
    if when is not None and generation == plan.get("fail_at", 1) and all(
            _config_value(chain.config, k) == v for k, v in when.items()):
        raise RuntimeError(f"test failure (tests/faults.py plan for {chain.config.name})")
    kill_after = plan.get("kill_after")
    marker = directory / f"{chain.config.name}.killed.{chain.config.fingerprint()}"
    if kill_after is not None and generation == kill_after + 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(0.5)  # let the driver take the last report first
        os.kill(os.getpid(), signal.SIGKILL)
