"""Numbers and names as the terminal, the report and TensorBoard print them."""

from __future__ import annotations

import math
from typing import Any


def short_names(paths: list[str]) -> dict[str, str]:
    """`recursion.real_fraction` -> `real_fraction`, unless two paths share that last part."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last, strict=True)}


def is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def fmt_flops(x: float | None) -> str:
    """1.2e9 style (compact, no '+' or leading zeros in the exponent)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def fmt_gap(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"


def fmt_interval(mean: float | None, se: float | None, fmt=None) -> str:
    """``mean ± SE`` (the mean alone when there is no standard error, e.g. one seed)."""
    if se is None or not isinstance(se, (int, float)) or not math.isfinite(se):
        return (fmt or fmt_gap)(mean)
    if mean is not None and math.isfinite(mean) and se <= 1e-9 * abs(mean):
        se = 0.0  # rounding noise of identical values (deterministic costs)
    if fmt is None:  # gaps: both to the second significant digit of the SE
        if mean is None or not math.isfinite(mean):
            return "n/a"
        places = max(2, 1 - math.floor(math.log10(se))) if se > 0 else 2
        return f"{mean:.{places}f} ± {se:.{places}f}"
    return f"{fmt(mean)} ± {fmt(se)}"


def fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def describe(best: dict[str, Any], tolerance: float, confidence: float | None = None) -> str:
    """In words: 'regime=accumulate, real_fraction=0.32 does not collapse (gap 0.03 ± 0.01,
    90% bound 0.05 <= 0.10, 5 seeds) at 1.2e9 FLOPs (trial ...)'."""
    names = short_names(list(best["params"]))
    params = ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in best["params"].items())
    return (f"{params or 'the base config'} does not collapse ({interval_text(best, tolerance, confidence)})"
            f" at {fmt_interval(best['total_flops'], best.get('total_flops_se'), fmt_flops)} FLOPs "
            f"(trial {trial_label(best)})")


def trial_label(trial: Any) -> str:
    """A trial as every table, the live line and the report name it: the Tune trial id (the
    directory trials/<id>) and the Optuna trial number (optuna-dashboard's #n) side by side."""
    get = trial.get if hasattr(trial, "get") else (lambda k, d=None: getattr(trial, k, d))
    tid, number = get("trial_id"), get("number")
    try:
        n = int(number)
    except (TypeError, ValueError):
        n = -1
    return f"{tid} #{n}" if n >= 0 else str(tid)


# --------------------------------------------------------------------------- terminal tables
def print_table(console: Any, table: Any, *, key_columns: int = 1) -> None:
    """Print a rich table without cutting a column name, whatever the width.

    Fits: as is. Piped or redirected (not a terminal): one table as wide as it needs (a
    file or a pager has no width). A terminal too narrow: the columns in groups that fit,
    each group repeating the first ``key_columns`` (generation, trial...) so rows stay
    readable.
    """
    from rich.cells import cell_len

    for col in table.columns:  # a header is never shortened to 'gener…'
        col.min_width = max(col.min_width or 0, cell_len(str(col.header)))
        col.overflow = "fold"
    widths = [max([cell_len(str(col.header))] + [cell_len(str(c)) for c in col._cells]) + 3
              for col in table.columns]
    need = sum(widths) + 1
    if need <= console.width:
        console.print(table)
    elif not console.is_terminal:  # print(width=) cannot widen a console: set its width
        width = console.width
        console.width = need
        try:
            console.print(table, crop=False)
        finally:
            console.width = width
    else:
        for part in _column_groups(table, widths, console.width, key_columns):
            console.print(part)


def _column_groups(table: Any, widths: list[int], width: int, key_columns: int) -> list[Any]:
    from rich.table import Table

    keys = list(range(min(key_columns, len(table.columns))))
    base = sum(widths[i] for i in keys) + 1
    groups: list[list[int]] = [[]]
    used = base
    for i in range(len(keys), len(table.columns)):
        if groups[-1] and used + widths[i] > width:
            groups.append([])
            used = base
        groups[-1].append(i)
        used += widths[i]
    parts = []
    for n, group in enumerate(groups):
        title = table.title if n == 0 else None
        part = Table(title=title, caption=table.caption if n == len(groups) - 1 else None)
        cols = [table.columns[i] for i in keys + group]
        for col in cols:
            part.add_column(col.header, justify=col.justify, min_width=col.min_width,
                            overflow="fold")
        for r in range(table.row_count):
            part.add_row(*[col._cells[r] for col in cols])
        parts.append(part)
    return parts

def interval_text(row: dict[str, Any], tolerance: float, confidence: float | None = None) -> str:
    """'gap 0.03 ± 0.01, 90% bound 0.05 <= 0.10, 5 seeds' (one seed: 'gap 0.03 <= 0.10, 1 seed')."""
    n = int(row.get("n_seeds") or 1)
    gap = fmt_interval(row["quality_gap"], row.get("quality_gap_se"))
    ucb = row.get("quality_gap_ucb")
    if n > 1 and isinstance(ucb, (int, float)) and math.isfinite(ucb):
        level = f"{confidence:.0%} " if confidence else ""
        return f"gap {gap}, {level}bound {fmt_gap(ucb)} <= {fmt_gap(tolerance)}, {n} seeds"
    return f"gap {gap} <= {fmt_gap(tolerance)}, 1 seed: no interval"
