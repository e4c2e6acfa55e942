"""The sweep's health check as recorded in its run directory (``RUN_DIR/health.json``).

The driver runs ``sweep.engine.health.health_check`` on the sweep's base config before the
trials (``search.check``, on by default) and writes its report here; ``analyze`` and the HTML
report read it back and flag a sweep whose check failed: its gaps may not resolve the
tolerance, so its answer may be an artefact (an undertrained model 0, a noisy measurement).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweep.files.atomic import write_text

HEALTH_FILE = "health.json"


def write_health(run_dir: Path, record: dict[str, Any]) -> None:
    """Record the check (``HealthReport.to_dict()`` plus context) atomically."""
    write_text(Path(run_dir) / HEALTH_FILE, json.dumps(record, indent=2, default=str))


def read_health(run_dir: Path) -> dict[str, Any] | None:
    """The recorded check, None when the sweep did not run one (or predates the check).

    A file that does not parse is reported as a failed check (the sweep cannot show it
    passed), never silently dropped.
    """
    path = Path(run_dir) / HEALTH_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("passed"), bool):
            raise ValueError("no boolean 'passed'")
    except (OSError, ValueError) as exc:
        return {"passed": False, "reason": f"{HEALTH_FILE} is unreadable ({exc})"}
    return record


def health_warning(record: dict[str, Any] | None) -> str | None:
    """One line flagging a failed check (None when it passed or did not run)."""
    if record is None or record.get("passed"):
        return None
    return ("HEALTH CHECK FAILED: the measurement may not resolve the tolerance, so this "
            f"sweep's verdicts may be artefacts: {record.get('reason', '?')}")


def health_note(record: dict[str, Any] | None) -> str:
    """One line for any outcome: passed (with its numbers), failed, or not run."""
    if record is None:
        return ("health check not run (search.check: false, or a run directory from before "
                "the check); `collapse-sweep check` runs it")
    return health_warning(record) or f"health check passed: {record.get('reason', '')}"
