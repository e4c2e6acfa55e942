"""What every benchmark piece shares: the result record, timing helpers, machine info, writers.

A piece is a module with ``run(quick: bool) -> list[dict]``; each dict is a record
``{name, value, unit, target, met}`` (``target`` a short text such as ">= 0.85" or None,
``met`` True/False/None) plus optional ``piece``/``note``. ``run_all`` writes them to
``benchmarks/results.json`` and ``benchmarks/RESULTS.md``, keeping the records of pieces
that did not run this time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sweep.files.atomic import write_text

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
RECORD_KEYS = ("name", "value", "unit", "target", "met")


def record(name: str, value: float | int | str | None, unit: str, *, target: str | None = None,
           met: bool | None = None, note: str | None = None) -> dict[str, Any]:
    """One result. ``value`` is rounded to 4 significant digits for the tables."""
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.4g}")
    elif isinstance(value, float):
        value = None  # JSON has no NaN/inf
    out: dict[str, Any] = {"name": name, "value": value, "unit": unit, "target": target,
                           "met": None if met is None else bool(met)}
    if note:
        out["note"] = note
    return out


def at_least(value: float, bound: float) -> tuple[str, bool]:
    return f">= {bound:g}", bool(value >= bound)


def at_most(value: float, bound: float) -> tuple[str, bool]:
    return f"<= {bound:g}", bool(value <= bound)


def check_records(records: Iterable[dict[str, Any]]) -> None:
    """Raise if a record is malformed (used by run_all and the smoke test)."""
    for rec in records:
        missing = [k for k in RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"record {rec!r}: missing {missing}")
        if not isinstance(rec["name"], str) or not rec["name"]:
            raise ValueError(f"record {rec!r}: name must be a non-empty string")
        if not (rec["value"] is None or isinstance(rec["value"], (int, float, str))):
            raise ValueError(f"record {rec['name']}: value must be a number, text or null")
        if rec["met"] not in (True, False, None):
            raise ValueError(f"record {rec['name']}: met must be true, false or null")
        if rec["met"] is not None and rec["target"] is None:
            raise ValueError(f"record {rec['name']}: met without a target")
    json.dumps(list(records))


# --------------------------------------------------------------------------- timing
def interleaved(contenders: dict[str, Callable[[], Any]], *, reps: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Seconds per call of each contender, timed in turn within every repetition."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        for key, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return times


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed
        return None


def machine_info(command: list[str] | None = None) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("numpy", "torch", "ray", "optuna", "pandas",
                                               "scikit-learn", "transformers")},
        "command": " ".join(command if command is not None else [sys.executable, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


# --------------------------------------------------------------------------- writers
def load_previous(path: Path = RESULTS_JSON) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def merge(previous: dict[str, Any], new: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pieces by name: the new runs replace their own entries, others are kept as they were."""
    pieces = dict(previous.get("pieces") or {})
    pieces.update(new)
    return pieces


def write_results(pieces: dict[str, dict[str, Any]], *, machine: dict[str, Any],
                  order: list[str], json_path: Path = RESULTS_JSON,
                  md_path: Path = RESULTS_MD) -> None:
    """results.json: {machine, results: [records...], pieces: {name: {...}}}; RESULTS.md."""
    names = [n for n in order if n in pieces] + sorted(set(pieces) - set(order))
    flat = [{**r, "piece": n} for n in names for r in pieces[n].get("records", [])]
    payload = {"machine": machine, "results": flat, "pieces": {n: pieces[n] for n in names}}
    write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    write_text(md_path, render_markdown(payload, names))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_markdown(payload: dict[str, Any], names: list[str]) -> str:
    m = payload["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM; "
        f"Python {m.get('python')}; {vers}.",
        f"Command: `{m.get('command')}` ({m.get('date_utc')} UTC, {m.get('total_seconds', '?')} s, "
        f"pieces run: {', '.join(m.get('pieces_run') or []) or '?'}; load average before "
        f"{m.get('load_average_before')}, after {m.get('load_average_after')}). Pieces run at "
        "other times keep their own date below.",
        "",
        "| piece | name | value | unit | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        for r in payload["pieces"][n].get("records", []):
            met = {True: "✓", False: "✗", None: ""}[r.get("met")]
            lines.append(f"| {n} | {r['name']} | {_fmt(r.get('value'))} | {r.get('unit', '')} | "
                         f"{r.get('target') or ''} | {met} |")
    for n in names:
        piece = payload["pieces"][n]
        lines += ["", f"## {n}", ""]
        meta = [f"run {piece.get('date_utc', '?')} UTC", f"{piece.get('seconds', 0):.0f} s"]
        if piece.get("load_average"):
            meta.append(f"load average after {piece['load_average']}")
        if piece.get("quick"):
            meta.append("quick mode")
        lines.append(f"*{', '.join(meta)}.*")
        if piece.get("error"):
            lines += ["", f"**Failed:** `{piece['error']}`"]
        if piece.get("method"):
            lines += ["", piece["method"].strip()]
        notes = [f"- **{r['name']}**: {r['note']}" for r in piece.get("records", []) if r.get("note")]
        if notes:
            lines += ["", *notes]
    return "\n".join(lines) + "\n"
