"""Terminal view of a sweep analysis (rich tables); input is ``analysis.summarize`` output."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweep.analysis.format import (
    fmt_flops,
    fmt_gap,
    fmt_value,
    print_table,
    short_names,
    trial_label,
)


def _params_text(params: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    names = short_names(list(params))
    return ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in params.items() if k not in skip)


def _has_label_cost(trials: list[dict[str, Any]]) -> bool:
    """A label-cost column only for sweeps that paid for labels (scorer human)."""
    return any((t.get("total_label_cost") or 0) > 0 for t in trials)


def print_analysis(summary: dict[str, Any], *, console: Console | None = None) -> None:
    console = console or Console()
    c = summary["counts"]
    tol = summary["tolerance"]
    console.print(f"[bold]{escape(str(summary['run_dir']))}[/bold]: {c['trials']} trials — {c['finished']} "
                  f"finished, {c['failed']} failed, {c['running']} running; {c['feasible']} do "
                  f"not collapse ({summary['collapse_metric']} gap <= {fmt_gap(tol)})")

    front = sorted(summary["pareto_front"], key=lambda t: t["total_flops"])  # reads as the step line
    if front:
        params = sorted({p for t in front for p in t["params"]})
        names = short_names(params)
        labels = _has_label_cost(front)
        table = Table(title="Feasible Pareto front: quality gap vs total compute")
        for col in ["trial", "quality gap", "total FLOPs", *(["label cost"] if labels else []),
                    *[names[p] for p in params]]:
            table.add_column(col, justify="right")
        for t in front:
            table.add_row(escape(trial_label(t)), fmt_gap(t["quality_gap"]), fmt_flops(t["total_flops"]),
                          *([fmt_value(t.get("total_label_cost"))] if labels else []),
                          *[escape(fmt_value(t["params"].get(p, ""))) for p in params])
        print_table(console, table)
    else:
        console.print("[yellow]no feasible trial yet (none finished without collapsing)[/yellow]")

    regimes = summary["best_per_regime"]
    if regimes:
        table = Table(title="Best per regime (cheapest non-collapsing; * = none feasible: lowest gap)")
        labels = _has_label_cost(list(regimes.values()))
        for col in ("regime", "trial", "quality gap", "total FLOPs",
                    *(["label cost"] if labels else []), "params"):
            table.add_column(col)
        for regime, t in regimes.items():
            table.add_row(escape(regime + ("" if t["feasible"] else " *")), escape(trial_label(t)),
                          fmt_gap(t["quality_gap"]), fmt_flops(t["total_flops"]),
                          *([fmt_value(t.get("total_label_cost"))] if labels else []),
                          escape(_params_text(t["params"], skip=("recursion.regime",))))
        print_table(console, table)

    for objective, imp in summary["importance"].items():
        if imp:
            table = Table(title=f"Parameter importance for {objective} "
                                f"(Optuna fANOVA, from {summary.get('importance_source', '?')})")
            table.add_column("parameter")
            table.add_column("importance", justify="right")
            for name, value in imp.items():
                table.add_row(escape(name), f"{value:.2f}")
            print_table(console, table)

    if summary["cheapest_feasible_text"]:
        console.print(f"[bold green]cheapest non-collapsing configuration:[/bold green] "
                      f"{escape(summary['cheapest_feasible_text'])}")
    else:
        console.print("[bold yellow]no configuration avoided collapse yet; best per regime above "
                      "lists the closest ones[/bold yellow]")
