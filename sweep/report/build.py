"""``collapse-sweep report``: a self-contained HTML page with the figures a reader needs.

RUN_DIR/report/index.html embeds every PNG (data URIs) and the PNGs sit beside it; the
results are exported as CSV beside the parquet files. Every figure renders on partial
sweeps: a panel without data says so instead of failing.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis.core import (
    DEFAULT_OBJECTIVES,
    REGIME_COL,
    Sweep,
    _jsonable,
    complete,
    confirmation_summary,
    fmt_flops,
    load_sweep,
    pareto_front,
    summarize,
)
from sweep.analysis.load import ledger_results
from sweep.config import ChainConfig, load_config
from sweep.files.atomic import atomic_path, write_csv, write_text
from sweep.observe.palette import (
    TOLERANCE_STYLE,
    TRUTH_STYLE,
    marker_areas,
    regime_color,
)
from sweep.problems import size_columns
from sweep.report.html import render_html
from sweep.rundir.ledger import LEDGER_FILE
from sweep.theory.curves import theory_curves

X_COL, Y_COL = "param.recursion.real_fraction", "param.curation.strength"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(regime: str, others: Any = ()) -> str:
    return regime_color(regime, others)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)
    return path




def _regimes(sweep: Sweep, df: pd.DataFrame) -> pd.Series:
    if REGIME_COL in df:
        return df[REGIME_COL].fillna(sweep.config.recursion.regime).astype(str)
    return pd.Series(sweep.config.recursion.regime, index=df.index)


def _regime_handles(regimes: list[str]) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=_color(r, regimes), marker="o", ls="", label=r) for r in regimes]


STAR_AREA = 320  # the answer's star in the compute-quality figure


def answer_point(sweep: Sweep, ok: pd.DataFrame, front: pd.DataFrame
                 ) -> tuple[pd.Series, str] | None:
    """Where the compute-quality figure's star goes, and its label: the answer's search trial
    when confirmation on unseen seeds picked one (it need not be the cheapest point of the
    search's front: confirmation certifies the cheapest candidates by their *mean* gap, and
    the answer is the one whose fresh-seed bound holds); else the cheapest point of the
    feasible front, said to be unconfirmed when confirmation is on."""
    summary = confirmation_summary(sweep)
    answer = summary["answer"]
    if answer is not None:
        row = ok[ok["number"] == answer["number"]]
        if len(row):
            n = int((answer.get("confirmation") or {}).get("n_seeds") or 0)
            return row.iloc[0], f"answer: confirmed on {n} unseen seeds"
    if front.empty:
        return None
    cheapest = front.sort_values(["total_flops", "quality_gap"]).iloc[0]
    unconfirmed = " (search; not confirmed)" if summary["confirm_top"] > 0 else ""
    return cheapest, f"cheapest non-collapsing{unconfirmed}"


def _size_handles(size_col: str, areas: dict[str, float]) -> list[Any]:
    from matplotlib.lines import Line2D

    name = size_col.removeprefix("param.model.")
    return [Line2D([], [], marker="o", color="white", markeredgecolor="black", ls="",
                   markersize=float(np.sqrt(a)), label=f"{name} {s}") for s, a in areas.items()]


# --------------------------------------------------------------------------- 1. compute vs quality
def fig_compute_quality(sweep: Sweep, out: Path) -> Path | None:
    """Each trial at (total FLOPs, quality gap): colour = regime, marker area = model size,
    circle = does not collapse, cross = collapses; error bars = one standard error over the
    trial's replicate seeds where it has several (columns ``<objective>_se``)."""
    from matplotlib.lines import Line2D

    plt = _plt()
    ok = complete(sweep.results, DEFAULT_OBJECTIVES)
    if ok.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.8), constrained_layout=True)
    tol = sweep.tolerance
    regimes = _regimes(sweep, ok)
    names = sorted(regimes.unique())
    size_col = _size_col(ok)
    areas = marker_areas(ok[size_col]) if size_col else {}
    area = ok[size_col].astype(str).map(areas).fillna(46.0) if size_col else \
        pd.Series(46.0, index=ok.index)
    for regime in names:
        part = ok[regimes == regime]
        feas = part["feasible"].astype(bool)
        color = _color(regime, names)
        _error_bars(ax, part, color)
        ax.scatter(part.total_flops[feas], part.quality_gap[feas], color=color,
                   s=area[part.index][feas], edgecolors="black", linewidths=0.4,
                   zorder=3)
        ax.scatter(part.total_flops[~feas], part.quality_gap[~feas], color=color, marker="x",
                   s=area[part.index][~feas] * 1.1, linewidths=1.6, zorder=3)
    handles = _regime_handles(names)
    front = pareto_front(ok, {"quality_gap": "min", "total_flops": "min"})  # the plotted plane
    if not front.empty:
        f = front.sort_values(["total_flops", "quality_gap"])
        ax.step(f.total_flops, f.quality_gap, where="post", color="black", lw=1.3, zorder=2)
        handles.append(Line2D([], [], color="black", lw=1.3, label="feasible Pareto front"))
    if (star := answer_point(sweep, ok, front)) is not None:
        point, label = star
        ax.scatter([point.total_flops], [point.quality_gap], marker="*", s=STAR_AREA,
                   facecolor="gold", edgecolors="black", zorder=4)
        ax.annotate(f"{label}\n{fmt_flops(point.total_flops)} FLOPs",
                    (point.total_flops, point.quality_gap), xytext=(12, -28),
                    textcoords="offset points", fontsize=8)
        handles.append(Line2D([], [], marker="*", color="gold", markeredgecolor="black", ms=13,
                              ls="", label=label))
    ax.axhline(tol, **TOLERANCE_STYLE)
    handles += [Line2D([], [], marker="o", color="white", markeredgecolor="black", ls="",
                       label="no collapse"),
                Line2D([], [], marker="x", color="black", ls="", label="collapsed"),
                Line2D([], [], **TOLERANCE_STYLE, label=f"collapse tolerance ({tol:g})")]
    if size_col:
        handles += _size_handles(size_col, areas)
    if (ok.total_flops > 0).any():  # compute spans orders of magnitude: log, never an offset
        ax.set_xscale("log")
    if ok.quality_gap.abs().max() > 30 * tol:
        ax.set_yscale("symlog", linthresh=tol)
    ax.set_xlabel("total compute (FLOPs, log scale)")
    metric = sweep.config.collapse.metric  # gap = its relative change, worse-positive
    ax.set_ylabel(f"quality gap: {metric} relative to generation 0")
    hidden = len(sweep.results) - len(ok)
    ax.set_title(f"Compute vs quality ({sweep.config.collapse.metric}): cheapest point under the "
                 f"dashed line wins" + (f"\n{hidden} failed/diverged/running trial{'s' * (hidden > 1)} not shown"
                                        if hidden else ""), fontsize=10)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1),
              labelspacing=0.9)
    ax.grid(alpha=0.25, which="both")
    return _save(fig, out)


def _error_bars(ax, part: pd.DataFrame, color: str) -> None:
    """+-1 standard error over replicate seeds, where the results carry one."""
    yerr = pd.to_numeric(part.get("quality_gap_se"), errors="coerce") if "quality_gap_se" in part \
        else None
    xerr = pd.to_numeric(part.get("total_flops_se"), errors="coerce") if "total_flops_se" in part \
        else None
    if (yerr is None or not np.isfinite(yerr).any()) and (xerr is None or not np.isfinite(xerr).any()):
        return
    ax.errorbar(part.total_flops, part.quality_gap,
                yerr=None if yerr is None else yerr.fillna(0.0).to_numpy(float),
                xerr=None if xerr is None else xerr.fillna(0.0).to_numpy(float),
                fmt="none", ecolor=color, elinewidth=1.0, alpha=0.7, zorder=2)


# --------------------------------------------------------------------------- 2. phase diagram
def _size_col(df: pd.DataFrame) -> str | None:
    return next((c for c in size_columns() if c in df and df[c].nunique() > 1), None)


def fig_phase(sweep: Sweep, out: Path) -> Path | None:
    """Collapse over real_fraction x curation strength, one panel per regime (x model size);
    None without finished trials or when neither axis was searched."""
    from matplotlib.colors import TwoSlopeNorm

    plt = _plt()
    ok = complete(sweep.results, DEFAULT_OBJECTIVES)
    searched = [c for c in (X_COL, Y_COL) if c in ok]
    if ok.empty or not searched:
        return None
    ok = ok.copy()  # an axis that was not searched sits at the base config's value
    if X_COL not in ok:
        ok[X_COL] = sweep.config.recursion.real_fraction
    if Y_COL not in ok:
        ok[Y_COL] = sweep.config.curation.strength
    regimes = _regimes(sweep, ok)
    size_col = _size_col(ok)
    sizes = ok[size_col].astype(str) if size_col else pd.Series("", index=ok.index)
    panels = sorted({(r, s) for r, s in zip(regimes, sizes, strict=True)})
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols + 1.2, 4.2 * rows), squeeze=False,
                             constrained_layout=True)
    tol = sweep.tolerance
    norm = TwoSlopeNorm(vmin=-2 * tol, vcenter=tol, vmax=4 * tol)  # white = at the tolerance
    sc = None
    ymax = max(0.9, float(ok[Y_COL].max()))
    for ax, (regime, size) in zip(axes.flat, panels, strict=False):
        part = ok[(regimes == regime) & (sizes == size)]
        gap = part.quality_gap.clip(norm.vmin, norm.vmax)
        feas = part["feasible"].astype(bool)
        _tolerance_contour(ax, part, tol)
        sc = ax.scatter(part[X_COL][feas], part[Y_COL][feas], c=gap[feas], cmap="coolwarm", norm=norm,
                        s=70, edgecolors="black", linewidths=0.5, zorder=3)
        ax.scatter(part[X_COL][~feas], part[Y_COL][~feas], c=gap[~feas], cmap="coolwarm", norm=norm,
                   s=80, marker="X", edgecolors="black", linewidths=0.5, zorder=3)
        size_text = f", {size_col.removeprefix('param.model.')} {size}" if size else ""
        ax.set_title(f"{regime}{size_text} ({len(part)} trials)")
        ax.set_xlabel("real fraction kept per generation")
        ax.set_ylabel("curation strength")
        ax.set_xlim(-0.04, 1.04)
        ax.set_ylim(-0.04, ymax + 0.04)  # the same axes in every panel
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if sc is not None:
        fig.colorbar(sc, ax=axes, shrink=0.85, extend="both",
                     label=f"quality gap (relative); white = tolerance {tol:g}")
    fig.suptitle("Where collapse happens: blue holds quality, red degrades; X = collapsed"
                 " (dashed, on grids: gap = tolerance)")
    return _save(fig, out)


def _tolerance_contour(ax, part: pd.DataFrame, tol: float) -> None:
    """The interpolated gap = tolerance line, only on a full grid (on scattered points a
    triangulated contour zigzags between neighbours and reads as a finding it is not)."""
    x, y, z = (part[c].to_numpy(float) for c in (X_COL, Y_COL, "quality_gap"))
    cells = part.groupby([X_COL, Y_COL]).quality_gap.median()
    nx, ny = len(np.unique(x)), len(np.unique(y))
    if nx < 3 or ny < 3 or len(cells) != nx * ny or not (z.min() < tol < z.max()):
        return
    x, y, z = (cells.index.get_level_values(0).to_numpy(float),
               cells.index.get_level_values(1).to_numpy(float), cells.to_numpy(float))
    try:
        ax.tricontour(x, y, z, levels=[tol], colors="black", linestyles="--", linewidths=1.2)
    except (ValueError, RuntimeError):  # degenerate triangulation (collinear points)
        return


# --------------------------------------------------------------------------- trajectories
def trial_configs(sweep: Sweep) -> dict[str, ChainConfig]:
    """Each trial's chain config: trials/<id>/config.yaml, else the base config + its params."""
    from sweep.config import trial_config

    out: dict[str, ChainConfig] = {}
    rows = {str(r["trial_id"]): r for _, r in sweep.results.iterrows()} if not sweep.results.empty else {}
    ids = list(dict.fromkeys([*rows, *(sweep.generations["trial_id"].astype(str).unique()
                                       if "trial_id" in sweep.generations else [])]))
    for tid in ids:
        path = sweep.run_dir / "trials" / tid / "config.yaml"
        try:
            if path.is_file():
                out[tid] = load_config(path)
                continue
            row = rows.get(tid)
            params = {k[len("param."):]: _jsonable(v) for k, v in row.items()
                      if str(k).startswith("param.") and pd.notna(v)} if row is not None else {}
            out[tid] = trial_config(sweep.config, params)
        except Exception:  # noqa: BLE001 - an unreadable trial config: use the base config
            out[tid] = sweep.config
    return out


def _with_regime(sweep: Sweep, configs: dict[str, ChainConfig]) -> pd.DataFrame:
    gens = sweep.generations
    if gens.empty:
        return gens
    regime = {t: c.recursion.regime for t, c in configs.items()}
    return gens.assign(regime=gens.trial_id.map(regime).fillna(sweep.config.recursion.regime))


def _generation_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.25)


def truth_reference(config: ChainConfig, column: str) -> float | None:
    """The truth's value of a per-generation statistic, where the config defines one."""
    if column == "minority_share" and config.data is not None and \
            getattr(config.data, "source", None) == "truth-lm":
        return float(config.data.minority_share)
    if column == "minority_weight" and config.model.family == "gmm":
        return float(config.model.minority_weight)
    if column == "kl":
        return 0.0
    return None


def fig_trajectories(sweep: Sweep, out: Path, columns: list[tuple[str, str]], title: str,
                     configs: dict[str, ChainConfig]) -> Path | None:
    """One panel per column: a thin line per trial (its seeds' mean when it has replicates),
    the per-regime median bold, the truth's value dotted where known. None without data."""
    plt = _plt()
    gens = _with_regime(sweep, configs)
    present = [(c, label) for c, label in columns if c in gens and gens[c].notna().any()]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(7 * len(present), 4.6), squeeze=False,
                             constrained_layout=True)
    regimes_all = sorted(gens.regime.unique())
    for ax, (col, label) in zip(axes.flat, present, strict=True):
        data = gens[np.isfinite(pd.to_numeric(gens[col], errors="coerce"))]
        for regime in sorted(data.regime.unique()):
            color = _color(regime, regimes_all)
            part = data[data.regime == regime]
            # replicate seeds of one trial: its line is their mean
            per_trial = part.groupby(["trial_id", "generation"])[col].mean().reset_index()
            for _, trial in per_trial.groupby("trial_id", sort=True):
                ax.plot(trial.generation, trial[col], color=color, alpha=0.3, lw=0.9)
            med = per_trial.groupby("generation")[col].median()
            ax.plot(med.index, med.to_numpy(), color=color, lw=2.4,
                    label=f"{regime} (median of {part.trial_id.nunique()})")
        truth = _truth_value(sweep, data, col)
        if truth is not None:
            ax.axhline(truth, **TRUTH_STYLE, label=f"truth ({truth:.3g})")
        _generation_axis(ax)
        ax.set_ylabel(label)
        ax.legend(fontsize=8, frameon=False, title="regime", title_fontsize=8)
    fig.suptitle(title)
    return _save(fig, out)


def _truth_value(sweep: Sweep, data: pd.DataFrame, col: str) -> float | None:
    measured = f"{col}_truth"  # measured on the truth's own rows, when the metrics provide it
    if measured in data and pd.to_numeric(data[measured], errors="coerce").notna().any():
        return float(pd.to_numeric(data[measured], errors="coerce").median())
    return truth_reference(sweep.config, col)


def _theory_groups(gens: pd.DataFrame, configs: dict[str, ChainConfig]
                   ) -> dict[str, dict[str, tuple[Any, list[str]]]]:
    """panel (family regime statistic) -> closed form (one per n, K...) -> its trials."""
    panels: dict[str, dict[str, tuple[Any, list[str]]]] = {}
    ids = set(gens["trial_id"]) if "trial_id" in gens else set()
    for tid, cfg in sorted(configs.items()):
        for curve in theory_curves(cfg):
            if tid in ids and curve.column in gens:
                panel = f"{cfg.model.family} {cfg.recursion.regime}: {curve.column}"
                panels.setdefault(panel, {}).setdefault(curve.formula, (curve, []))[1].append(tid)
    return panels


def fig_theory(sweep: Sweep, out: Path, configs: dict[str, ChainConfig], *, max_curves: int = 5
               ) -> Path | None:
    """Trajectories of the trials that meet a closed form's assumptions, with that closed
    form; None when no trial does (the report then says why in a line, not an empty frame)."""
    plt = _plt()
    gens = sweep.generations
    panels = _theory_groups(gens, configs)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.8),
                             squeeze=False, constrained_layout=True)
    colors = _plt().get_cmap("tab10").colors
    for ax, (panel, curves) in zip(axes.flat, panels.items(), strict=True):
        biggest = sorted(curves.items(), key=lambda kv: -len(kv[1][1]))[:max_curves]
        for color, (formula, (curve, tids)) in zip(colors, biggest, strict=False):
            traj = []
            for tid in tids:
                t = gens[gens.trial_id == tid].sort_values("generation")
                raw = pd.Series(t[curve.column].to_numpy(float), index=t.generation.to_numpy())
                traj.append(raw)
                ax.plot(raw.index, curve.measured(raw.to_numpy()), color=color, alpha=0.3, lw=0.8)
            # the theory is a ratio of expectations (E[err_g]/E[err_0]): average, then normalise
            raw_mean = pd.concat(traj, axis=1).mean(axis=1)
            mean = pd.Series(curve.measured(raw_mean.to_numpy()), index=raw_mean.index)
            expr, _, setting = formula.partition(", ")
            prefix = f"{setting}: " if setting else ""
            ax.plot(mean.index, mean.to_numpy(), color=color, lw=2,
                    label=f"{prefix}measured (mean of {len(tids)} trial{'s' * (len(tids) > 1)})")
            g = np.arange(int(mean.index.max()) + 1)
            ax.plot(g, curve.expected(g), "--", color=color, lw=1.6, label=f"{prefix}theory")
        hidden = len(curves) - len(biggest)
        ax.set_title(panel.split(":")[0] + " (real_fraction 0, no curation)\ntheory: " + expr
                     + (f"; {hidden} more settings not shown" if hidden else ""), fontsize=10)
        _generation_axis(ax)
        ax.set_ylabel(biggest[0][1][0].label)
        ax.legend(fontsize=7.5, frameon=False)
    fig.suptitle("Closed forms of sweep/theory/REFERENCES.md (dashed) vs measured chains\n"
                 "(one chain scatters around the expectation)", fontsize=10)
    return _save(fig, out)


# --------------------------------------------------------------------------- the page
def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("collapse-sweep", "numpy", "pandas", "torch", "ray", "optuna", "scikit-learn",
                "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def build_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/index.html (+ PNGs), results.csv and generations.csv; return the page."""
    run_dir = Path(run_dir)
    sweep = load_sweep(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / LEDGER_FILE).is_file():  # the views, rebuilt from the ledger
        ledger_results(run_dir, sweep.config, sweep.objectives, rewrite=True)
    elif not sweep.results.empty:
        write_csv(sweep.results, run_dir / "results.csv")
    write_csv(sweep.generations, run_dir / "generations.csv")
    configs = trial_configs(sweep)
    analytic = sweep.config.model.family in ("gaussian", "linreg", "categorical")
    finished = complete(sweep.results, DEFAULT_OBJECTIVES)
    figures = [
        ("Compute vs quality", "Each point is one trial (colour: regime; size: model size; "
         "cross: collapsed; bars: one standard error over replicate seeds); the step line is "
         "the feasible Pareto front; the star is the answer (the cheapest configuration "
         "confirmed on unseen seeds, at its search point), or before confirmation the "
         "cheapest configuration that did not collapse in the search.",
         fig_compute_quality(sweep, out_dir / "compute_vs_quality.png"),
         "No finished trial yet: nothing to plot."),
        ("Phase diagram of collapse", "Quality gap over real data kept x curation strength, one "
         "panel per regime (and model size when searched).", fig_phase(sweep, out_dir / "phase.png"),
         "No finished trial yet." if finished.empty else "The phase diagram needs "
         "recursion.real_fraction or curation.strength in search.space."),
        ("Held-out real NLL over generations", "Thin lines: trials; bold: median per regime.",
         fig_trajectories(sweep, out_dir / "real_nll.png",
                          [("real_nll", "held-out real NLL (nats)")],
                          "Real-data quality per generation, by regime", configs),
         "No per-generation data yet (trials/*/generations.parquet)."),
        ("Tails and minorities", "Tail NLL: the truth's rarest held-out examples; minority share / "
         "weight where the family has a minority; dotted: the truth's value.",
         fig_trajectories(sweep, out_dir / "tail.png",
                          [("tail_nll", "tail NLL: rarest held-out examples (nats)"),
                           ("minority_share", "minority-dialect share of samples"),
                           ("minority_weight", "fitted minority component weight")],
                          "Tails erode first", configs),
         "No tail statistics in this sweep's per-generation data."),
        ("Theory overlay", "Only trials whose config meets the closed form's assumptions "
         "(sweep/theory/REFERENCES.md).", fig_theory(sweep, out_dir / "theory.png", configs),
         "No trial meets a closed form's assumptions (real_fraction 0, no curation, a pure "
         "regime)." if analytic else None),
    ]
    # a figure without data is a line of text, or (theory on a family without closed forms)
    # nothing at all: never an empty frame; a stale PNG of an earlier report goes
    names = {"Compute vs quality": "compute_vs_quality.png", "Phase diagram of collapse": "phase.png",
             "Held-out real NLL over generations": "real_nll.png", "Tails and minorities": "tail.png",
             "Theory overlay": "theory.png"}
    for title, _, path, _ in figures:
        if path is None and title in names:
            (out_dir / names[title]).unlink(missing_ok=True)
    figures = [f for f in figures if f[2] is not None or f[3]]
    summary = _jsonable(summarize(sweep))
    config_text = (run_dir / "sweep.yaml").read_text()
    page = render_html(sweep.name, summary, figures, config_text=config_text, versions=versions(),
                       generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    write_text(out_dir / "index.html", page)
    return out_dir / "index.html"

