"""One visual vocabulary for every figure (report PNGs, TensorBoard images).

A regime has one colour everywhere; a model size one marker area (bigger model, bigger
marker); feasibility one marker shape (filled circle: does not collapse, cross: collapses);
the truth one line style. Colour-blind safe (Okabe-Ito).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

REGIME_COLORS = {
    "replace": "#D55E00",               # vermillion: the regime that collapses
    "accumulate": "#009E73",            # bluish green
    "accumulate-subsample": "#0072B2",  # blue
}
OTHER_COLORS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
FALLBACK_COLOR = "#7f7f7f"
TRUTH_STYLE = {"color": "black", "ls": ":", "lw": 1.4}  # a reference value of the truth
TOLERANCE_STYLE = {"color": "grey", "ls": "--", "lw": 1.2}
#: GPT size names in increasing order (other size axes are numbers: dim, outcomes...).
SIZE_ORDER = ("xxs", "xs", "s", "m", "l", "xl", "xxl")
MARKER_AREA_RANGE = (25.0, 260.0)  # points^2: smallest and largest model
MARKER_AREA_ONE = 50.0  # one size only


def regime_color(regime: str, others: Iterable[str] = ()) -> str:
    """The regime's colour; an unknown name gets a stable colour by its rank in ``others``."""
    if regime in REGIME_COLORS:
        return REGIME_COLORS[regime]
    unknown = sorted({str(o) for o in others if o not in REGIME_COLORS} | {regime})
    return OTHER_COLORS[unknown.index(regime) % len(OTHER_COLORS)] if unknown else FALLBACK_COLOR


def _size_key(value: Any) -> tuple[int, float, str]:
    text = str(value)
    if text in SIZE_ORDER:
        return (0, float(SIZE_ORDER.index(text)), text)
    try:
        number = float(text)
        return (0, number if math.isfinite(number) else math.inf, text)
    except ValueError:
        return (1, 0.0, text)


def sorted_sizes(values: Iterable[Any]) -> list[str]:
    """Distinct size values as strings, smallest model first."""
    return [str(v) for v in sorted({str(v) for v in values}, key=_size_key)]


def marker_areas(values: Iterable[Any]) -> dict[str, float]:
    """Size value -> scatter marker area (points^2), growing with the model size's rank."""
    sizes = sorted_sizes(values)
    lo, hi = MARKER_AREA_RANGE
    if len(sizes) <= 1:
        return {s: MARKER_AREA_ONE for s in sizes}
    return {s: lo + (hi - lo) * i / (len(sizes) - 1) for i, s in enumerate(sizes)}
