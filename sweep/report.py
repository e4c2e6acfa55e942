"""``collapse-sweep report``: a self-contained HTML page with the figures a reader needs.

RUN_DIR/report/index.html embeds every PNG (data URIs) and the PNGs sit beside it; the
results are exported as CSV beside the parquet files.
"""

from __future__ import annotations

import base64
import html
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis import Sweep, load_sweep, pareto_front, summarize
from sweep.io import atomic_path, write_csv, write_text

REGIME_COLORS = {"replace": "#d62728", "accumulate": "#2ca02c", "accumulate-subsample": "#1f77b4"}
REGIME_COL = "param.recursion.regime"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _regimes(sweep: Sweep, df: pd.DataFrame) -> pd.Series:
    if REGIME_COL in df:
        return df[REGIME_COL].astype(str)
    return pd.Series(sweep.config.recursion.regime, index=df.index)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def fig_compute_quality(sweep: Sweep, out: Path) -> Path:
    plt = _plt()
    df = sweep.results
    fig, ax = plt.subplots(figsize=(8, 5.5), constrained_layout=True)
    ok = df[np.isfinite(pd.to_numeric(df.get("quality_gap"), errors="coerce").astype(float))] \
        if not df.empty else df
    if ok.empty:
        _empty(ax, "no finished trials yet")
        return _save(fig, out)
    regimes = _regimes(sweep, ok)
    for regime in sorted(regimes.unique()):
        part = ok[regimes == regime]
        color = REGIME_COLORS.get(regime, "#7f7f7f")
        feas = part["feasible"].astype(bool)
        ax.scatter(part.total_flops[feas], part.quality_gap[feas], color=color, s=36,
                   label=f"{regime} (no collapse)")
        ax.scatter(part.total_flops[~feas], part.quality_gap[~feas], color=color, marker="x",
                   s=36, label=f"{regime} (collapsed)")
    front = pareto_front(df, {"quality_gap": "min", "total_flops": "min"})
    if not front.empty:
        f = front.sort_values("total_flops")
        ax.step(f.total_flops, f.quality_gap, where="post", color="black", lw=1.2,
                label="feasible Pareto front")
    ax.axhline(sweep.tolerance, ls="--", color="grey", lw=1,
               label=f"collapse tolerance ({sweep.tolerance:g})")
    flops = ok.total_flops[ok.total_flops > 0]
    if len(flops) and flops.max() / flops.min() > 100:
        ax.set_xscale("log")
    gaps = ok.quality_gap.abs()
    if len(gaps) and gaps.max() > 100 * max(sweep.tolerance, 1e-9):
        ax.set_yscale("symlog", linthresh=sweep.tolerance)
    ax.set_xlabel("total compute per trial (FLOPs: train + sample + score)")
    ax.set_ylabel(f"quality gap vs generation 0 (relative {sweep.config.collapse.metric})")
    ax.set_title("Compute vs quality: the cheapest point under the dashed line wins")
    ax.legend(fontsize=8, frameon=False, loc="best")
    return _save(fig, out)


def fig_phase(sweep: Sweep, out: Path) -> Path:
    """Collapse over real_fraction x curation strength, one panel per regime (x model size)."""
    plt = _plt()
    df = sweep.results
    x_col, y_col = "param.recursion.real_fraction", "param.curation.strength"
    ok = df[np.isfinite(pd.to_numeric(df.get("quality_gap"), errors="coerce").astype(float))] \
        if not df.empty else df
    if ok.empty or x_col not in ok or y_col not in ok:
        fig, ax = plt.subplots(figsize=(6, 3), constrained_layout=True)
        _empty(ax, "phase diagram needs recursion.real_fraction and curation.strength in the "
                   "search space")
        return _save(fig, out)
    regimes = _regimes(sweep, ok)
    sizes = ok["param.model.size"].astype(str) if "param.model.size" in ok else \
        pd.Series("", index=ok.index)
    panels = sorted({(r, s) for r, s in zip(regimes, sizes, strict=True)})
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4 * rows), squeeze=False,
                             constrained_layout=True)
    vmax = max(3 * sweep.tolerance, 1e-9)
    sc = None
    for ax, (regime, size) in zip(axes.flat, panels, strict=False):
        part = ok[(regimes == regime) & (sizes == size)]
        clipped = part.quality_gap.clip(-vmax, vmax)
        feas = part["feasible"].astype(bool)
        sc = ax.scatter(part[x_col][feas], part[y_col][feas], c=clipped[feas], cmap="coolwarm",
                        vmin=-vmax, vmax=vmax, s=60, edgecolors="black", linewidths=0.4)
        ax.scatter(part[x_col][~feas], part[y_col][~feas], c=clipped[~feas], cmap="coolwarm",
                   vmin=-vmax, vmax=vmax, s=60, marker="X", edgecolors="black", linewidths=0.4)
        ax.set_title(f"{regime}" + (f", size {size}" if size else ""))
        ax.set_xlabel("real fraction kept per generation")
        ax.set_ylabel("curation strength s")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, max(0.9, float(ok[y_col].max())) + 0.03)  # same axes in every panel
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="quality gap (X = collapsed)", shrink=0.8)
    fig.suptitle("Where collapse happens (blue: no degradation, red: degraded)")
    return _save(fig, out)


def _trajectory_groups(sweep: Sweep) -> pd.DataFrame:
    gens = sweep.generations
    if gens.empty or sweep.results.empty or "trial_id" not in sweep.results:
        return gens
    regimes = _regimes(sweep, sweep.results)
    lookup = dict(zip(sweep.results.trial_id, regimes, strict=True))
    return gens.assign(regime=gens.trial_id.map(lookup).fillna(sweep.config.recursion.regime))


def fig_trajectories(sweep: Sweep, out: Path, columns: list[tuple[str, str]], title: str) -> Path:
    plt = _plt()
    gens = _trajectory_groups(sweep)
    present = [(c, label) for c, label in columns if c in gens and gens[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(6.5 * max(1, len(present)), 4.5),
                             squeeze=False, constrained_layout=True)
    if not present:
        _empty(axes[0, 0], "no per-generation data for " + ", ".join(c for c, _ in columns))
        return _save(fig, out)
    for ax, (col, label) in zip(axes.flat, present, strict=True):
        seen = set()
        for _, part in gens.groupby("trial_id", sort=True):
            regime = part.regime.iloc[0]
            ax.plot(part.generation, part[col], color=REGIME_COLORS.get(regime, "#7f7f7f"),
                    alpha=0.55, lw=1, label=None if regime in seen else regime)
            seen.add(regime)
        _overlay_theory(ax, sweep, col)
        ax.set_xlabel("generation")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, out)


def _overlay_theory(ax, sweep: Sweep, col: str) -> None:
    """Closed forms of REFERENCES.md for the pure replace regime of the analytic families."""
    m = sweep.config.model
    n = sweep.config.recursion.samples_per_generation
    g = np.arange(sweep.config.recursion.generations + 1)
    curve = None
    if m.family == "gaussian" and col == "var" and m.estimator == "mle":
        curve = ((n - 1) / n) ** (g + 1)
    elif m.family == "categorical" and col == "gini" and m.truth == "uniform":
        curve = (1 - 1 / m.outcomes) * (1 - 1 / n) ** (g + 1)
    if curve is not None:
        ax.plot(g, curve, "k--", lw=1.5, label="theory: pure replace, E[...]")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("collapse-sweep", "numpy", "pandas", "torch", "ray", "optuna", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def build_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    sweep = load_sweep(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not sweep.results.empty:
        write_csv(sweep.results, run_dir / "results.csv")
    if not sweep.generations.empty:
        write_csv(sweep.generations, run_dir / "generations.csv")
    figures = [
        ("Compute vs quality", fig_compute_quality(sweep, out_dir / "compute_vs_quality.png")),
        ("Phase diagram of collapse", fig_phase(sweep, out_dir / "phase.png")),
        ("Held-out real NLL over generations", fig_trajectories(
            sweep, out_dir / "real_nll.png", [("real_nll", "held-out real NLL (nats per item/token)")],
            "Real-data quality per generation, coloured by regime")),
        ("Tail and minority", fig_trajectories(
            sweep, out_dir / "tail.png",
            [("tail_nll", "tail NLL: rarest 10% of held-out data (nats)"),
             ("minority_share", "minority-dialect share of samples"),
             ("var", "fitted variance"), ("gini", "gini (1 - sum p^2)")],
            "Tails erode first")),
    ]
    summary = summarize(sweep)
    write_text(out_dir / "index.html", _html(sweep, summary, figures))
    return out_dir / "index.html"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _html(sweep: Sweep, summary: dict[str, Any], figures: list[tuple[str, Path]]) -> str:
    front = [{"trial": t.get("trial_id"), "quality gap": t["quality_gap"],
              "total FLOPs": t["total_flops"], "params": t["params"]} for t in summary["pareto_front"]]
    per_regime = [{"regime": k, "feasible": v["feasible"], "trial": v.get("trial_id"),
                   "quality gap": v["quality_gap"], "total FLOPs": v["total_flops"],
                   "params": v["params"]} for k, v in summary["best_per_regime"].items()]
    answer = summary["cheapest_feasible_text"] or "No configuration avoided collapse."
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    figs = "".join(f"<h2>{html.escape(t)}</h2>{_img(p)}" for t, p in figures)
    config_text = html.escape((sweep.run_dir / "sweep.yaml").read_text())
    vers = _table([versions()])
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>collapse-sweep report: {html.escape(sweep.run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
img{{max-width:100%;border:1px solid #ddd}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} .answer{{font-size:1.2em;
background:#eef7ee;padding:.8em;border-left:4px solid #2ca02c}} pre{{background:#f6f6f6;padding:1em}}
</style></head><body>
<h1>Sweep {html.escape(sweep.run_dir.name)}</h1>
<p>{summary['trials']} trials ({html.escape(counts)}); {summary['feasible']} do not collapse
(quality gap &le; {sweep.tolerance:g} on {html.escape(sweep.config.collapse.metric)}).</p>
<p class="answer"><b>Cheapest non-collapsing configuration:</b> {html.escape(answer)}</p>
<h2>Feasible Pareto front</h2>{_table(front)}
<h2>Best per regime</h2>{_table(per_regime)}
{figs}
<h2>Exact config (sweep.yaml)</h2><pre>{config_text}</pre>
<h2>Versions</h2>{vers}
</body></html>"""
