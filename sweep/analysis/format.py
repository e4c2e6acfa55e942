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


def fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def describe(best: dict[str, Any], tolerance: float) -> str:
    """In words: 'regime=accumulate, real_fraction=0.32 does not collapse (gap 0.03 <= 0.10) ...'."""
    names = short_names(list(best["params"]))
    params = ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in best["params"].items())
    return (f"{params or 'the base config'} does not collapse (gap {fmt_gap(best['quality_gap'])} "
            f"<= {fmt_gap(tolerance)}) at {fmt_flops(best['total_flops'])} FLOPs "
            f"(trial {best.get('trial_id')})")
