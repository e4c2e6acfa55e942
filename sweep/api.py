"""The Python API of sweeps, for scripts and notebooks.

    from sweep import load_config, run_sweep, load_sweep
    result = run_sweep("configs/analytic-sweep.yaml", overrides=["search.trials=8"])
    result                    # in a notebook: the answer, counts and the Pareto front
    result.results            # one row per trial (pandas)
    result.run_dir            # runs/analytic-sweep: report, TensorBoard, optuna.journal

``run_sweep`` / ``resume_sweep`` start (or join) Ray only when called: ``import sweep``
never imports Ray, so a notebook that only reads results stays light.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from sweep.analysis.load import Sweep
    from sweep.config import ChainConfig


@dataclass(frozen=True)
class SweepResult:
    """A sweep directory, read: its results table, its answer and where it lives.

    ``answer`` is the cheapest trial that does not collapse (a dict: trial_id, quality_gap,
    total_flops, params...) or None; ``answer_text`` says it in one sentence.
    """

    run_dir: Path
    results: pd.DataFrame
    answer: dict[str, Any] | None
    answer_text: str | None
    tolerance: float
    sweep: Sweep = field(repr=False)

    # ----------------------------------------------------------------- derived views
    @property
    def config(self) -> ChainConfig:
        return self.sweep.config

    @property
    def generations(self) -> pd.DataFrame:
        """One row per trial and generation, every metric (trials/<id>/generations.parquet)."""
        return self.sweep.generations

    @property
    def pareto_front(self) -> pd.DataFrame:
        """Feasible, non-dominated trials by the sweep's objectives."""
        from sweep.analysis.core import pareto_front

        return pareto_front(self.results, self.sweep.objectives)

    def counts(self) -> dict[str, int]:
        from sweep.analysis.core import counts

        return counts(self.results)

    def importance(self, objective: str = "quality_gap") -> dict[str, float]:
        """Optuna fANOVA importance of each searched parameter for ``objective``."""
        from sweep.analysis.importance import param_importance

        return param_importance(self.sweep, objective)

    def report(self) -> Path:
        """Write RUN_DIR/report/index.html (figures embedded) and return its path."""
        from sweep.report.build import build_report

        return build_report(self.run_dir)

    # ----------------------------------------------------------------- display
    def _headline(self) -> str:
        c = self.counts()
        return (f"{c['trials']} trials: {c['finished']} finished, {c['failed']} failed, "
                f"{c['running']} running; {c['feasible']} do not collapse "
                f"(gap <= {self.tolerance:g})")

    def __repr__(self) -> str:
        answer = self.answer_text or "no configuration avoided collapse (yet)"
        return (f"SweepResult({str(self.run_dir)!r})\n  {self._headline()}\n"
                f"  cheapest non-collapsing: {answer}")

    def _repr_html_(self) -> str:
        front = self.pareto_front
        cols = ["trial_id", "number", "quality_gap", "total_flops",
                *[c for c in front.columns if str(c).startswith("param.")]]
        table = (front[[c for c in cols if c in front]].to_html(index=False, float_format="{:.4g}".format,
                                                                border=0)
                 if not front.empty else "<p>no feasible trial yet</p>")
        answer = html.escape(self.answer_text or "no configuration avoided collapse (yet)")
        return (f"<div><b>SweepResult</b> <code>{html.escape(str(self.run_dir))}</code><br>"
                f"{html.escape(self._headline())}<br><b>Cheapest non-collapsing:</b> {answer}"
                f"<br><i>Feasible Pareto front</i>{table}</div>")


def load_sweep(run_dir: str | Path) -> SweepResult:
    """Read a sweep directory (finished, running or interrupted) without starting Ray."""
    from sweep.analysis.core import cheapest_feasible, describe, trial_summary
    from sweep.analysis.load import load_sweep as load

    sweep = load(run_dir)
    best = cheapest_feasible(sweep.results)
    answer = trial_summary(best) if best is not None else None
    return SweepResult(run_dir=sweep.run_dir, results=sweep.results, answer=answer,
                       answer_text=describe(answer, sweep.tolerance) if answer else None,
                       tolerance=sweep.tolerance, sweep=sweep)


def run_sweep(config: ChainConfig | dict | str | Path, *, overrides: list[str] | None = None,
              name: str | None = None, storage: str | Path = "./runs", address: str | None = None,
              progress: bool = True) -> SweepResult:
    """Run the sweep of ``config.search`` on Ray Tune + Optuna and read its results.

    ``config``: a ChainConfig, a dict, or a YAML path; ``overrides``: ``["a.b=value", ...]``
    as ``--set``. Results go to ``storage/name`` (default: the config's name). A local Ray
    is started for the sweep and shut down after it unless Ray is already initialised
    (``address``: join a cluster). Config errors raise ``ConfigError`` before Ray starts.
    """
    from sweep.config import ChainConfig, load_config

    if not isinstance(config, ChainConfig) or overrides:
        config = load_config(config if not isinstance(config, ChainConfig)
                             else config.model_dump(mode="json"), overrides or [])
    from sweep.observe.status import announce
    from sweep.search.space import validate_search

    spec = validate_search(config)
    announce(name or config.name, trials=spec.num_trials, concurrency=spec.concurrency,
             address=address, enabled=progress)
    from sweep.search.driver import run_sweep as run  # imports Ray

    return load_sweep(run(config, name=name, storage=str(storage), address=address,
                          progress=progress))


def resume_sweep(run_dir: str | Path, *, address: str | None = None,
                 progress: bool = True) -> SweepResult:
    """Continue an interrupted sweep (finished trials are not rerun) and read its results.

    ``run_dir`` may be a run's URI (``s3://bucket/prefix/NAME``)."""
    from sweep.observe.status import announce

    announce(str(run_dir).rstrip("/").rpartition("/")[2], trials=0, concurrency=0,
             address=address, resume=True, enabled=progress)
    from sweep.rundir.storage import is_uri
    from sweep.search.driver import resume_sweep as resume  # imports Ray

    where = str(run_dir) if is_uri(run_dir) else Path(run_dir)  # a URI keeps its "//"
    return load_sweep(resume(where, address=address, progress=progress))
