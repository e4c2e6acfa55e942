"""Terminal view of a sweep analysis (rich tables); input is ``analysis.summarize`` output."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweep.analysis.format import (
    fmt_flops,
    fmt_gap,
    fmt_interval,
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
                  f"not collapse ({_level(summary)}bound of the mean {summary['collapse_metric']} gap "
                  f"<= {fmt_gap(tol)})")
    warning = summary.get("health_warning")
    if warning:
        console.print(f"[bold white on red]{escape(warning)}[/bold white on red]")
    elif summary.get("health_note"):
        console.print(f"[dim]{escape(summary['health_note'])}[/dim]")

    front = sorted(summary["pareto_front"], key=lambda t: t["total_flops"])  # reads as the step line
    if front:
        params = sorted({p for t in front for p in t["params"]})
        names = short_names(params)
        labels = _has_label_cost(front)
        level = f"{summary.get('confidence', 0.9):.0%}"
        table = Table(title="Feasible Pareto front: quality gap (mean ± SE over seeds) vs total compute")
        for col in ["trial", "quality gap", f"{level} bound", "collapsed", "total FLOPs",
                    *(["label cost"] if labels else []), *[names[p] for p in params]]:
            table.add_column(col, justify="right")
        for t in front:
            table.add_row(escape(trial_label(t)), _gap(t), _bound(t), _rate(t),
                          fmt_interval(t["total_flops"], t.get("total_flops_se"), fmt_flops),
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
                          _gap(t), fmt_interval(t["total_flops"], t.get("total_flops_se"), fmt_flops),
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

    _print_confirmation(summary, console)
    if warning:
        console.print("[bold red]the health check of this sweep failed (see the top): "
                      "read the answer below as provisional[/bold red]")
    if summary.get("answer_text"):
        console.print(f"[bold green]cheapest non-collapsing configuration (confirmed):[/bold green] "
                      f"{escape(summary['answer_text'])}")
    elif summary["cheapest_feasible_text"]:
        why = ("confirmation is off (search.confirm.top: 0)" if not summary.get("confirm_top")
               else "not confirmed on unseen seeds" if summary.get("confirmation")
               and all(c["confirmation"] for c in summary["confirmation"])
               else "confirmation has not run yet")
        console.print(f"[bold yellow]cheapest non-collapsing configuration ({why}):[/bold yellow] "
                      f"{escape(summary['cheapest_feasible_text'])}")
    else:
        console.print("[bold yellow]no configuration avoided collapse yet; best per regime above "
                      "lists the closest ones[/bold yellow]")


def _level(summary: dict[str, Any]) -> str:
    return f"{summary.get('confidence', 0.9):.0%} "


def _gap(t: dict[str, Any]) -> str:
    return fmt_interval(t["quality_gap"], t.get("quality_gap_se"))


def _bound(t: dict[str, Any]) -> str:
    if int(t.get("n_seeds") or 1) < 2:
        return "- (1 seed)"
    return fmt_gap(t.get("quality_gap_ucb"))


def _rate(t: dict[str, Any]) -> str:
    rate, n = t.get("collapse_rate"), int(t.get("n_seeds") or 1)
    if not isinstance(rate, (int, float)) or rate != rate:
        return "?"
    return f"{round(rate * n)}/{n}"


def _print_confirmation(summary: dict[str, Any], console: Console) -> None:
    rows = summary.get("confirmation") or []
    if not rows:
        return
    level = f"{summary.get('confidence', 0.9):.0%}"
    table = Table(title=f"Confirmation: the cheapest feasible configs re-run on unseen seeds "
                        f"(confirmed = {level} bound <= {fmt_gap(summary['tolerance'])})")
    for col in ("trial", "params", "search gap", "fresh-seed gap", f"{level} bound", "collapsed",
                "total FLOPs", "confirmed"):
        table.add_column(col)
    for row in rows:
        c, s = row["confirmation"], row["search"]
        params = escape(_params_text(row["params"]))
        if c is None:
            table.add_row(escape(str(row["trial_id"])), params, _gap(s), "not run yet", "", "", "", "")
            continue
        table.add_row(escape(str(row["trial_id"])), params, _gap(s), _gap(c), _bound(c), _rate(c),
                      fmt_interval(c["total_flops"], c.get("total_flops_se"), fmt_flops),
                      "[green]yes[/green]" if c.get("confirmed") else "[red]no[/red]")
    print_table(console, table)
