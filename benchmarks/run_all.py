"""Run the benchmarks and write benchmarks/results.json + benchmarks/RESULTS.md.

    python -m benchmarks.run_all [--quick] [--only NAME[,NAME]]     (make bench)

Each piece is a module ``benchmarks.<name>`` with ``run(quick: bool) -> list[dict]``. Pieces
not run this time keep their previous records in the output files. A piece that raises is
recorded as failed (with the error) and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/run_all.py`

from benchmarks.common import (  # noqa: E402
    RESULTS_JSON,
    RESULTS_MD,
    check_records,
    load_previous,
    machine_info,
    merge,
    write_results,
)

#: In run order (cheap first; the Ray sweep last so its workers do not disturb the others).
PIECES = ["search_efficiency", "cost_growth", "sharing", "analyze_speed", "gpt_vs_hf",
          "gpt_utilisation", "sweep_overhead"]


def _available(name: str) -> bool:
    return (Path(__file__).resolve().parent / f"{name}.py").is_file()


def run_piece(name: str, *, quick: bool) -> dict[str, Any]:
    started = time.time()
    entry: dict[str, Any] = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                             "quick": quick}
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        entry["method"] = getattr(module, "METHOD", None) or (module.__doc__ or "").strip()
        records = module.run(quick)
        check_records(records)
        entry["records"] = records
    except Exception as exc:  # noqa: BLE001 - one broken piece must not lose the others
        traceback.print_exc()
        entry["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        entry["records"] = []
    entry["seconds"] = time.time() - started
    entry["load_average"] = _load()
    return entry


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds per piece)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(PIECES)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for results.json / RESULTS.md (default: benchmarks/)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(PIECES)
    unknown = [n for n in names if n not in PIECES]
    if unknown:
        parser.error(f"--only: unknown piece(s) {', '.join(unknown)} (allowed: {', '.join(PIECES)})")
    json_path = args.out / RESULTS_JSON.name if args.out else RESULTS_JSON
    md_path = args.out / RESULTS_MD.name if args.out else RESULTS_MD
    command = [Path(sys.executable).name, "-m", "benchmarks.run_all", *(argv if argv is not None
                                                                          else sys.argv[1:])]
    t0 = time.time()
    load_before = _load()
    new: dict[str, dict[str, Any]] = {}
    for name in names:
        if not _available(name):
            print(f"[bench] {name}: not present, skipped", file=sys.stderr)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        new[name] = run_piece(name, quick=args.quick)
        status = "FAILED" if new[name].get("error") else "ok"
        print(f"[bench] {name}: {status} in {new[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
        for rec in new[name]["records"]:
            met = {True: "✓", False: "✗", None: " "}[rec.get("met")]
            print(f"  {met} {rec['name']}: {rec['value']} {rec['unit']}"
                  + (f" (target {rec['target']})" if rec.get("target") else ""), file=sys.stderr)
    machine = machine_info(command)
    machine.update(total_seconds=round(time.time() - t0, 1), pieces_run=list(new),
                   load_average_before=load_before, load_average_after=_load())
    pieces = merge(load_previous(json_path), new)
    write_results(pieces, machine=machine, order=PIECES, json_path=json_path, md_path=md_path)
    print(f"[bench] wrote {json_path} and {md_path} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 1 if any(p.get("error") for p in new.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
