"""How each generation's training set is built: the regimes, written once.

n = samples_per_generation; batch_g = round(real_fraction * n) real examples plus the rest
synthetic (model g-1's curated samples).

- ``replace``:              D_g = batch_g
- ``accumulate``:           D_g = D_0 + batch_1 + ... + batch_g
- ``accumulate-subsample``: D_g = n examples drawn uniformly (without replacement) from that union
"""

from __future__ import annotations

from typing import Any

import numpy as np

REGIMES = ("replace", "accumulate", "accumulate-subsample")


class Pool:
    """Every example a chain has produced so far, as one growing compact array.

    Capacity doubles when full, so accumulating G batches costs O(G n) copies in total and
    the pool is one contiguous array (1M int64 tokens ~ 8 MB, int8/uint8 stays smaller).
    """

    def __init__(self, first: np.ndarray) -> None:
        first = np.asarray(first)
        self._data = np.empty((max(len(first) * 4, 16), *first.shape[1:]), dtype=first.dtype)
        self._size = 0
        self.batch_sizes: list[int] = []
        self.append(first)

    def append(self, batch: np.ndarray) -> None:
        need = self._size + len(batch)
        if need > len(self._data):
            grown = np.empty((max(need, 2 * len(self._data)), *self._data.shape[1:]), self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = batch
        self._size = need
        self.batch_sizes.append(len(batch))

    def view(self) -> np.ndarray:
        return self._data[: self._size]

    @property
    def nbytes(self) -> int:
        return int(self._data[: self._size].nbytes)

    def __len__(self) -> int:
        return self._size

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.view().copy(), "batch_sizes": list(self.batch_sizes)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Pool:
        pool = cls(np.asarray(state["data"]))
        pool.batch_sizes = list(state["batch_sizes"])
        return pool


def split_batch(n: int, real_fraction: float) -> tuple[int, int]:
    """(real, synthetic) counts of one batch."""
    n_real = int(round(real_fraction * n))
    return n_real, n - n_real


def real_part(n_real: int, *, real_train: np.ndarray, source: str, draw_real,
              rng: np.random.Generator) -> np.ndarray:
    """The real examples of a batch: re-drawn from D_0 ('fixed') or new ones ('fresh')."""
    if n_real == 0:
        return real_train[:0]
    if source == "fresh":
        return draw_real(n_real, rng)
    idx = rng.choice(len(real_train), size=n_real, replace=n_real > len(real_train))
    return real_train[idx]


class Regime:
    """One regime, whole: what enters the pool and what generation g trains on."""

    def __init__(self, name: str, n: int) -> None:
        if name not in REGIMES:
            raise ValueError(f"recursion.regime: {name!r} (allowed: {', '.join(REGIMES)})")
        self.name = name
        self.n = n

    def next_training_set(self, pool: Pool, batch: np.ndarray,
                          rng: np.random.Generator) -> np.ndarray:
        """Add ``batch`` to the pool (replace never looks back: its pool stays D_0) and
        return D_g."""
        if self.name != "replace":
            pool.append(batch)
        if self.name == "replace":
            return batch
        union = pool.view()
        if self.name == "accumulate" or len(union) <= self.n:
            return union
        return union[rng.choice(len(union), size=self.n, replace=False)]  # accumulate-subsample
