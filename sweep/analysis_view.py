"""Terminal view of a sweep analysis (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_analysis(summary: dict[str, Any], *, console: Console | None = None) -> None:
    console = console or Console()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary["counts"].items())) or "no trials yet"
    console.print(f"[bold]{summary['run_dir']}[/bold]: {summary['trials']} trials ({counts}); "
                  f"{summary['feasible']} do not collapse (gap <= {summary['tolerance']:g})")
    front = summary["pareto_front"]
    params = sorted({p for t in front for p in t["params"]})
    table = Table(title="Feasible Pareto front: quality gap vs total compute")
    for col in ["trial", "quality gap", "total FLOPs", *params]:
        table.add_column(col, justify="right")
    for t in front:
        table.add_row(str(t.get("trial_id")), f"{t['quality_gap']:+.3g}", f"{t['total_flops']:.3g}",
                      *[_fmt(t["params"].get(p, "")) for p in params])
    console.print(table if front else "[yellow]no feasible trial yet: every finished trial collapsed[/yellow]")

    regimes = summary["best_per_regime"]
    if regimes:
        table = Table(title="Best per regime (cheapest non-collapsing; * = none feasible, lowest gap)")
        for col in ("regime", "trial", "quality gap", "total FLOPs", "params"):
            table.add_column(col)
        for regime, t in regimes.items():
            params_text = ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items()
                                    if k != "recursion.regime")
            table.add_row(regime + ("" if t["feasible"] else " *"), str(t.get("trial_id")),
                          f"{t['quality_gap']:+.3g}", f"{t['total_flops']:.3g}", params_text)
        console.print(table)

    for objective, imp in summary["importance"].items():
        if imp:
            table = Table(title=f"Parameter importance for {objective} (fANOVA)")
            table.add_column("parameter")
            table.add_column("importance", justify="right")
            for name, value in imp.items():
                table.add_row(name, f"{value:.2f}")
            console.print(table)

    if summary["cheapest_feasible_text"]:
        console.print(f"[bold green]cheapest non-collapsing configuration:[/bold green] "
                      f"{summary['cheapest_feasible_text']}")
    else:
        console.print("[bold yellow]no configuration avoided collapse; see the report for the "
                      "closest ones[/bold yellow]")
