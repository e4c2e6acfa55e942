"""``collapse-sweep theory``: measured vs closed form, pass/fail, a PNG and a CSV."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweep.analysis.format import print_table
from sweep.files.atomic import atomic_path, write_csv
from sweep.theory.checks import plot_theory, rows_frame, run_theory


def run_theory_command(*, out: Path, scale: float = 1.0, console: Console | None = None) -> int:
    console = console or Console()
    rows, frames, wall = run_theory(
        scale=scale, progress=lambda name, seeds: console.print(f"  {escape(name)}: {seeds} seeds ..."))
    table = Table(title=f"Analytic collapse results (sweep/theory/REFERENCES.md), {wall:.1f} s")
    for col in ("check", "statistic", "g", "measured", "theory", "error", "tolerance", "result"):
        table.add_column(col, justify="left" if col in ("check", "statistic") else "right")
    for r in rows:
        bound = " (lower bound)" if r.kind == "lower-bound" else ""
        table.add_row(escape(r.check), escape(r.statistic + bound), str(r.generation), f"{r.measured:.5g}",
                      f"{r.theory:.5g}", f"{r.error:+.2%}", f"{r.tolerance:.0%}",
                      "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
    print_table(console, table, key_columns=2)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows_frame(rows), out / "theory.csv")
    with atomic_path(out / "theory.png") as tmp:
        plot_theory(frames, tmp.with_suffix(".png"), scale=scale)
        tmp.with_suffix(".png").replace(tmp)
    failed = [r for r in rows if not r.passed]
    console.print(f"{len(rows) - len(failed)}/{len(rows)} pass; wrote {escape(str(out / 'theory.png'))}, "
                  f"{escape(str(out / 'theory.csv'))}")
    return 1 if failed else 0
