"""``collapse-sweep``: one command per study.

    collapse-sweep chain   CONFIG [--set k=v ...]     one chain, no Ray
    collapse-sweep check   CONFIG [--set k=v ...]     can the measurement resolve the tolerance?
    collapse-sweep run     CONFIG [--set k=v ...]     a sweep on Ray Tune + Optuna
    collapse-sweep resume  RUN_DIR                    continue an interrupted sweep
    collapse-sweep analyze RUN_DIR                    Pareto front, cheapest non-collapsing config
    collapse-sweep report  RUN_DIR                    HTML + PNG report
    collapse-sweep tensorboard RUN_DIR                TensorBoard on 127.0.0.1
    collapse-sweep dashboard RUN_DIR                  optuna-dashboard on 127.0.0.1
    collapse-sweep theory                             reproduce the analytic results

Bad input exits with status 2 and one line naming the field; nothing is written. A sweep
in which no trial finished exits 1; Ctrl-C exits 130 with the command that resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweep.config import ConfigError, load_config

RUN_DIR_HELP = ("the sweep directory (runs/NAME), or its URI on object storage "
                "(s3://bucket/prefix/NAME: downloaded into the local cache first)")

EXAMPLES = """examples:
  collapse-sweep chain --set recursion.regime=accumulate --set recursion.generations=50
  collapse-sweep chain configs/lm-chain.yaml --set curation.scorer=oracle --set curation.strength=0.5
  collapse-sweep theory
  collapse-sweep check configs/quick.yaml
  collapse-sweep run configs/quick.yaml --name quick
  collapse-sweep resume runs/quick
  collapse-sweep analyze runs/quick && collapse-sweep report runs/quick
  collapse-sweep run configs/quick.yaml --storage s3://my-bucket/runs   # no shared disk needed
  collapse-sweep analyze s3://my-bucket/runs/quick
"""


def _add_config_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("config", nargs=None if required else "?", metavar="CONFIG",
                   help="YAML config (see README 'Config reference')" +
                   ("" if required else "; default: built-in defaults (1-D Gaussian)"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set recursion.real_fraction=0.1 "
                        "(repeatable; values are YAML: numbers, lists, true/false); a searched "
                        "parameter by its path after search.space., e.g. "
                        "--set 'search.space.model.size={choice: [xs, s]}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collapse-sweep",
        description="Map when recursive training collapses, and the cheapest way to avoid it.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("chain", help="run one recursive-training chain (no Ray)",
                       description="Train models 0..G recursively, print a per-generation table "
                                   "and write generations.parquet.")
    _add_config_args(p, required=False)
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: runs/<name>)")
    p.add_argument("--seed", type=int, default=None, help="override the config seed")
    p.add_argument("--tb", action="store_true", help="also write TensorBoard events to OUT/tb")
    p.add_argument("--fresh", action="store_true",
                   help="ignore a checkpoint left in OUT by an interrupted run (default: resume)")
    p.add_argument("--check", action="store_true",
                   help="run the health check (`collapse-sweep check`) first and warn if it fails")

    p = sub.add_parser(
        "check", help="health check: is model 0 converged, is the gap's noise below tolerance?",
        description="Before spending a sweep's budget: fit model 0 with 2x its budget (training "
                    "longer must not improve the collapse metric by more than 1/4 of the "
                    "tolerance) and run a no-synthetic control (replace, real_fraction 1) over "
                    "a few seeds (its gap's mean and sd must stay within 1/3 of the tolerance). "
                    "Exit 0 when both hold, 1 when not.")
    _add_config_args(p, required=False)
    p.add_argument("--seeds", type=int, default=3, help="seeds of the control (default 3)")
    p.add_argument("--json", dest="json_out", type=Path, default=None,
                   help="also write the numbers to this JSON file")

    p = sub.add_parser("run", help="run a sweep on Ray Tune + Optuna",
                       description="Search the config's `search.space` with Optuna, trials on "
                                   "Ray Tune; results in STORAGE/NAME. First a health check "
                                   "(`collapse-sweep check`) of the base config: a failure is "
                                   "printed, recorded in STORAGE/NAME/health.json and flagged "
                                   "by analyze and report.")
    _add_config_args(p, required=True)
    p.add_argument("--name", default=None, help="run name (default: config `name`)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or HOST:PORT (default: a local Ray)")
    p.add_argument("--storage", default="./runs",
                   help="where runs go: a local or shared (NFS) directory, or object storage "
                        "such as s3://bucket/prefix (credentials and endpoint from the usual "
                        "AWS_* variables; the driver keeps a local cache in "
                        "$COLLAPSE_SWEEP_CACHE, default ~/.cache/collapse-sweep) (default ./runs)")
    p.add_argument("--quiet", action="store_true", help="no live progress table")
    p.add_argument("--no-check", action="store_true",
                   help="skip the health check before the trials (same as --set search.check=false)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--extend", action="store_true",
                       help="STORAGE/NAME exists: add the config's search.trials trials to its "
                            "study (same config and search space required)")
    again.add_argument("--overwrite", action="store_true",
                       help="STORAGE/NAME exists: delete it and start the sweep over")

    p = sub.add_parser("resume", help="continue an interrupted sweep (Ctrl-C, a killed driver)",
                       description="Continue a sweep after Ctrl-C or a killed driver: finished "
                                   "trials are not rerun (ledger.jsonl), interrupted ones restart "
                                   "from their last generation's checkpoint. Nothing "
                                   "is unpickled from RUN_DIR: the sweep is rebuilt from "
                                   "sweep.yaml, the ledger, the Optuna study and the trials' checkpoints.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or HOST:PORT (default: a local Ray)")
    p.add_argument("--quiet", action="store_true", help="no live progress table")

    p = sub.add_parser("analyze", help="Pareto front and cheapest non-collapsing config",
                       description="Print the feasible Pareto front (quality gap vs total FLOPs), "
                                   "the best trial per regime, parameter importance per objective "
                                   "and the cheapest configuration that does not collapse; write "
                                   "RUN_DIR/analysis.json. Works on running and partial sweeps.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)

    p = sub.add_parser("report", help="write RUN_DIR/report/index.html with figures",
                       description="A self-contained HTML page (figures embedded) with the answer, "
                                   "the Pareto front, compute vs quality, the phase diagram of "
                                   "collapse, per-generation trajectories and, for analytic "
                                   "families, the closed forms of sweep/theory/REFERENCES.md; "
                                   "also results.csv and generations.csv.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)

    p = sub.add_parser("tensorboard", help="serve a run's TensorBoard logs on 127.0.0.1",
                       description="TensorBoard over RUN_DIR: one run per trial (scalars grouped "
                                   "quality/ tail/ diversity/ compute/, HParams with the final "
                                   "metrics) and the sweep's Pareto image. Bound to 127.0.0.1; "
                                   "from another machine use ssh -L PORT:127.0.0.1:PORT.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a sweep directory (or its s3://... URI, downloaded and refreshed every "
                        "30 s), or any directory of TensorBoard event files")
    p.add_argument("--port", type=int, default=6006, help="port on 127.0.0.1 (default 6006)")

    p = sub.add_parser("dashboard", help="serve the sweep's Optuna study (optuna-dashboard) on 127.0.0.1",
                       description="optuna-dashboard over the sweep's Optuna study (RUN_DIR/optuna.journal): the Pareto front with "
                                   "the objectives' names, feasible vs infeasible trials, importance "
                                   "per objective, and per trial its Tune id and trials/<id> "
                                   "directory. Needs: pip install 'collapse-sweep[dashboard]'.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")

    p = sub.add_parser("theory", help="reproduce the analytic collapse results (pass/fail)",
                       description="Run the closed-form checks of the analytic literature "
                                   "(sweep/theory/REFERENCES.md, shipped with the package) over "
                                   "thousands of seeds through the chain engine; exit 1 if any is "
                                   "outside its tolerance.")
    p.add_argument("--out", type=Path, default=Path("runs/theory"),
                   help="where theory.png and theory.csv go (default runs/theory)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the seed counts (fewer seeds = faster, looser)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = {
        "chain": cmd_chain, "check": cmd_check, "run": cmd_run, "resume": cmd_resume, "analyze": cmd_analyze,
        "report": cmd_report, "tensorboard": cmd_tensorboard, "dashboard": cmd_dashboard,
        "theory": cmd_theory,
    }[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"collapse-sweep: error: {exc}", file=sys.stderr)
        return 2
    except _Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("collapse-sweep: interrupted", file=sys.stderr)
        return 130


class _Interrupted(Exception):
    """A sweep stopped by Ctrl-C: its one line, exit 130."""


@contextlib.contextmanager
def _interruptible(run_dir: Path | str) -> Iterator[None]:
    """Ctrl-C during a sweep: "interrupted: N of M trials done; resume with: ..." (exit 130).

    The first Ctrl-C lets Tune stop its trials (SweepInterrupted); a second one arrives as
    KeyboardInterrupt. No analysis is printed: a partial sweep has no final answer.
    """
    from sweep.search.driver import SweepInterrupted

    try:
        yield
    except SweepInterrupted as exc:
        raise _Interrupted(_interrupted_line(run_dir, exc.done, exc.total)) from None
    except KeyboardInterrupt:
        raise _Interrupted(_interrupted_line(run_dir, None, None)) from None


def _interrupted_line(run_dir: Path | str, done: int | None, total: int | None) -> str:
    if done is None or total is None:
        try:
            from sweep.rundir.integrity import trials_with_result
            from sweep.rundir.storage import cache_dir, is_uri
            from sweep.search.space import validate_search

            local = cache_dir(str(run_dir)) if is_uri(run_dir) else Path(run_dir)
            config = load_config(local / "sweep.yaml")
            done, total = trials_with_result(local, config.name), validate_search(config).num_trials
        except Exception:  # noqa: BLE001 - interrupted before the run directory was written
            return "interrupted before any trial ran"
    return (f"interrupted: {done} of {total} trials done; resume with: collapse-sweep resume "
            f"{shlex.quote(str(run_dir))}")


def _require_run_dir(run_dir: Path | str) -> Path:
    """A sweep directory; a URI is downloaded into its local cache first (unless a driver on
    this machine is writing that cache: it is then the newest copy)."""
    from sweep.rundir.layout import require_sweep_dir

    if _is_uri(run_dir):
        from sweep.rundir.lock import driver_running
        from sweep.rundir.storage import RunStorage, cache_dir, pull_run

        storage = RunStorage(str(run_dir))
        if not storage.exists("sweep.yaml"):
            raise ConfigError(f"RUN_DIR: {run_dir} is not a sweep directory (no sweep.yaml)")
        local = cache_dir(str(run_dir))
        if not driver_running(local):
            pull_run(storage, local)
        return require_sweep_dir(local)
    return require_sweep_dir(run_dir)


def _is_uri(run_dir: Path | str) -> bool:
    from sweep.rundir.storage import is_uri

    return is_uri(run_dir)


def _upload(run_dir: Path | str, local: Path, *names: str) -> None:
    """Results an analysis wrote into the cache of a URI run go back to the URI too."""
    if not _is_uri(run_dir):
        return
    from sweep.rundir.storage import RunStorage

    storage = RunStorage(str(run_dir))
    for name in names:
        path = local / name
        if path.is_dir():
            storage.put_tree(path, name)
        elif path.is_file():
            storage.put(path, name)


# --------------------------------------------------------------------------- commands
def cmd_chain(args: argparse.Namespace) -> int:
    from sweep.cli.chain import run_chain_command
    from sweep.config.limits import check_memory
    from sweep.config.paths import check_output_dir

    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed: must be >= 0, got {args.seed}")
    config = load_config(args.config, args.overrides)
    check_output_dir(args.out or Path("runs") / config.name, "--out")
    check_memory(config)
    return run_chain_command(config, out=args.out, seed=args.seed, tensorboard=args.tb,
                             fresh=args.fresh, check=args.check)


def cmd_check(args: argparse.Namespace) -> int:
    from sweep.cli.chain import run_check_command

    if args.seeds < 2:
        raise ConfigError(f"--seeds: need at least 2 to measure noise, got {args.seeds}")
    config = load_config(args.config, args.overrides)
    return run_check_command(config, seeds=args.seeds, json_out=args.json_out)


def cmd_run(args: argparse.Namespace) -> int:
    from sweep.config.limits import check_memory
    from sweep.config.paths import check_output_dir
    from sweep.search.space import validate_search

    config = load_config(args.config, args.overrides)
    if args.no_check and config.search:
        config = load_config(config.model_dump(mode="json"), {"search.check": False})
    if args.name is not None:
        try:
            config = load_config(config.model_dump(mode="json"), {"name": args.name})
        except ConfigError as exc:
            raise ConfigError(f"--{exc}") from None  # "name: ..." -> "--name: ..."
    spec = validate_search(config)  # every search error surfaces before Ray starts
    if not _is_uri(args.storage):  # a URI is checked by run_sweep (a write to the bucket)
        check_output_dir(args.storage, "--storage")
        from sweep.rundir.layout import check_new_run

        check_new_run(Path(args.storage) / config.name, extend=args.extend,
                      overwrite=args.overwrite)
    if args.address is None:  # trials run here: they must fit in this machine's memory
        check_memory(config, chains=spec.concurrency)
    from sweep.observe.status import announce

    # the first line, before importing Ray (seconds) and starting it (seconds more)
    announce(config.name, trials=spec.num_trials, concurrency=spec.concurrency,
             address=args.address, enabled=not args.quiet)
    if not (_is_uri(args.storage) or args.extend):
        # Ray starts now, the driver's imports beside it (~1 s sooner to the first trial).
        # Not yet for a URI (run_sweep checks the bucket first) or --extend (run_sweep
        # checks the new config against the run's, under the run's lock): their errors
        # come before Ray starts.
        from sweep.search.rayinit import prestart

        try:
            prestart(args.address)
        except KeyboardInterrupt:
            raise _Interrupted("interrupted before any trial ran") from None
    from sweep.search.driver import run_sweep

    if _is_uri(args.storage):
        from sweep.rundir.storage import join

        where: Path | str = join(args.storage, config.name)
    else:
        where = Path(args.storage) / config.name
    with _interruptible(where):
        run_dir = run_sweep(config, storage=args.storage, address=args.address,
                            progress=not args.quiet, extend=args.extend,
                            overwrite=args.overwrite)
    return _print_next_steps(run_dir, where)


def cmd_resume(args: argparse.Namespace) -> int:
    from sweep.observe.status import announce

    if _is_uri(args.run_dir):  # resume_sweep downloads it (under the driver's lock)
        where: Path | str = args.run_dir.rstrip("/")
        name = where.rpartition("/")[2]
    else:
        where = _require_run_dir(args.run_dir)
        name = where.name
    announce(name, trials=0, concurrency=0, address=args.address, resume=True,
             enabled=not args.quiet)
    from sweep.search.driver import resume_sweep

    with _interruptible(where):
        run_dir = resume_sweep(where, address=args.address, progress=not args.quiet)
    return _print_next_steps(run_dir, where)


def cmd_analyze(args: argparse.Namespace) -> int:
    from sweep.analysis.core import analyze

    local = _require_run_dir(args.run_dir)
    analyze(local)
    _upload(args.run_dir, local, "analysis.json")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sweep.report.build import build_report

    local = _require_run_dir(args.run_dir)
    path = build_report(local)
    _upload(args.run_dir, local, "report", "results.csv", "generations.csv")
    print(f"report: {path}")
    if _is_uri(args.run_dir):
        from sweep.rundir.storage import join

        print(f"        {join(args.run_dir, 'report', 'index.html')}")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from sweep.observe.serve import serve

    if _is_uri(args.run_dir):
        local = _require_run_dir(args.run_dir)
        _keep_pulling(args.run_dir, local)
        serve(local, port=args.port)
        return 0
    if not Path(args.run_dir).is_dir():
        raise ConfigError(f"RUN_DIR: {args.run_dir} does not exist")
    serve(args.run_dir, port=args.port)
    return 0


PULL_EVERY_S = 30.0  # `tensorboard URI` refreshes its local copy this often


def _keep_pulling(uri: str, local: Path) -> None:
    """Refresh the cache of a URI run in the background while TensorBoard serves it."""
    import threading
    import time

    from sweep.rundir.lock import driver_running
    from sweep.rundir.storage import RunStorage, pull_run

    def loop() -> None:
        storage = RunStorage(uri)
        while True:
            time.sleep(PULL_EVERY_S)
            try:
                if not driver_running(local):
                    pull_run(storage, local)
            except Exception as exc:  # noqa: BLE001 - a refresh failure keeps the old copy
                print(f"tensorboard: refreshing {uri} failed: {exc}", file=sys.stderr)

    threading.Thread(target=loop, name="pull-run", daemon=True).start()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sweep.observe.serve import serve_dashboard

    local = _require_run_dir(args.run_dir)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: {args.port} is out of range (allowed: 1..65535)")
    try:
        serve_dashboard(local, port=args.port)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigError(f"dashboard: {exc}") from None
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from sweep.cli.theory import run_theory_command

    if args.scale <= 0:
        raise ConfigError(f"--scale: must be > 0, got {args.scale}")
    return run_theory_command(out=args.out, scale=args.scale)


def _print_next_steps(run_dir: Path, where: Path | str | None = None) -> int:
    """Analyse a finished sweep and say where its results are; the exit status: 1 when no
    trial finished (every one failed or diverged: the sweep has no answer), else 0."""
    from sweep.analysis.core import analyze
    from sweep.observe.serve import command

    summary = analyze(run_dir)
    status = _no_answer(summary)
    if where is not None and _is_uri(where):
        _upload(where, run_dir, "analysis.json")
        print(f"\nresults:     {where}/results.parquet (local copy: {run_dir})")
        print(f"report:      collapse-sweep report {where}")
        print(f"tensorboard: collapse-sweep tensorboard {where}")
        return status
    print(f"\nresults:     {run_dir / 'results.parquet'}")
    print(f"report:      collapse-sweep report {run_dir}")
    print(f"tensorboard: {command(run_dir)}")
    return status


def _no_answer(summary: dict[str, Any]) -> int:
    """1 (and one line on stderr naming the first error) when trials ran but none finished."""
    counts = summary.get("counts", {})
    if counts.get("finished", 0) or not counts.get("trials", 0):
        return 0
    by_status = ", ".join(f"{n} {s}" for s, n in counts.get("by_status", {}).items())
    first = summary.get("first_error") or "see the trials' records in results.csv"
    print(f"collapse-sweep: no trial finished ({by_status}); first error: {first}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
