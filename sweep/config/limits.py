"""Size bounds checked before anything is allocated: an estimate of a chain's peak memory.

A chain holds its real training set, every synthetic batch it keeps (all of them when
accumulating), the candidates of one generation and the held-out test set; fitting and
scoring make a few temporary copies. The estimate is deliberately rough (a factor ~2) and
only refuses configurations that cannot fit at all, e.g. 10^12 samples (7 TiB).
"""

from __future__ import annotations

import math
import os

from sweep.config.errors import ConfigError
from sweep.config.schema import ChainConfig

#: Temporary copies made while fitting / sampling / scoring a generation.
WORKING_COPIES = 4


def example_bytes(config: ChainConfig) -> float:
    """Bytes of one example (float64 vectors, int64 tokens)."""
    m = config.model
    if m.family in ("gaussian", "gmm"):
        return 8.0 * m.dim
    if m.family == "linreg":
        return 8.0 * (m.dim + 1)
    if m.family == "categorical":
        return 8.0
    length = getattr(config.data, "max_len", None) or getattr(config.data, "block_size", 64)
    return 8.0 * length


def peak_examples(config: ChainConfig) -> float:
    r = config.recursion
    n = r.samples_per_generation
    kept = n * (r.generations + 1) if r.regime != "replace" else 2 * n
    candidates = n / max(1e-9, 1.0 - config.curation.strength)
    return kept + candidates + config.data.test_size


def estimate_bytes(config: ChainConfig) -> float:
    """Rough peak memory of one chain, in bytes."""
    total = WORKING_COPIES * example_bytes(config) * peak_examples(config)
    m = config.model
    if m.family == "gmm":  # EM responsibilities: one float per example and component
        total += WORKING_COPIES * 8.0 * m.components * peak_examples(config)
    if m.family == "linreg":  # the fixed design, T x d
        rows = m.design_rows or config.recursion.samples_per_generation
        total += WORKING_COPIES * 8.0 * rows * m.dim
    if m.family == "categorical":
        total += WORKING_COPIES * 8.0 * m.outcomes
    return total


def machine_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return math.inf


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(config: ChainConfig, *, chains: int = 1, available: float | None = None) -> None:
    """ConfigError (naming samples_per_generation) when ``chains`` chains cannot fit in memory."""
    need = estimate_bytes(config) * chains
    have = machine_bytes() if available is None else available
    if need > have:
        r = config.recursion
        running = f" for {chains} chains at once" if chains > 1 else ""
        raise ConfigError(
            f"recursion.samples_per_generation: needs about {fmt_bytes(need)} of memory{running} "
            f"({r.samples_per_generation} examples x {r.generations + 1} generations, "
            f"{r.regime}) but this machine has {fmt_bytes(have)}; use fewer samples, "
            "generations or a smaller model")
