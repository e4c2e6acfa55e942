"""Linear regression on a fixed design (Gerstgrasser et al. 2024).

Items are rows ``[x_1 .. x_d, y]``. The design X (T x d) is fixed for a chain; a model
labels the design rows with ``X w_hat + noise`` of the true variance. Replacing grows the
error linearly (ratio g + 1); accumulating bounds it (sum 1 / i^2 < pi^2 / 6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.base import check_items

_LOG_2PI = float(np.log(2 * np.pi))


class LinearRegression:
    """y = x . w + N(0, noise_var) with least-squares fit and known noise variance."""

    def __init__(self, design: np.ndarray, *, noise_var: float = 1.0, weights=None) -> None:
        self.design = np.asarray(design, dtype=float)
        self.dim = self.design.shape[1]
        self.noise_var = float(noise_var)
        self.weights = np.zeros(self.dim) if weights is None else np.asarray(weights, dtype=float)
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0  # items are not tokens: ignored

    def fit(self, data: np.ndarray, rng: np.random.Generator | None = None) -> None:
        rows = check_items(data, ndim=2)
        x, y = rows[:, : self.dim], rows[:, self.dim]
        self.weights = np.linalg.lstsq(x, y, rcond=None)[0]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Label the design rows in order (cycling when n > T) with fresh noise."""
        x = self.design[np.arange(n) % len(self.design)]
        noise = rng.standard_normal(n) * np.sqrt(self.noise_var * self.temperature)
        return np.column_stack([x, x @ self.weights + noise])

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        return self._log_prob(data, self.noise_var)

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-density of what ``sample`` draws: the noise variance times T."""
        return self._log_prob(data, self.noise_var * self.temperature)

    def _log_prob(self, data: np.ndarray, var: float) -> np.ndarray:
        rows = check_items(data, ndim=2)
        resid = rows[:, self.dim] - rows[:, : self.dim] @ self.weights
        return -0.5 * (resid**2 / var + np.log(var) + _LOG_2PI)

    def flops(self, op: str, n_items: int) -> float:
        d = self.dim
        if op == "fit":  # X^T X and X^T y (2 n d^2 + 2 n d) + solve (d^3)
            return 2 * n_items * d * d + 2 * n_items * d + d**3
        if op in ("sample", "score"):  # one dot product per row plus the noise/residual
            return n_items * (2 * d + 2)
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def param_error(self, truth_weights: np.ndarray) -> float:
        return float(np.sum((self.weights - truth_weights) ** 2))

    def reset(self, rng: np.random.Generator) -> None:
        """A closed-form fit has no initialisation: nothing to reset, nothing drawn."""

    def item_size(self, data: np.ndarray) -> None:
        """Every item is one unit."""
        return None

    def summary(self) -> dict[str, float]:
        return {"weight_norm": float(np.linalg.norm(self.weights))}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = np.asarray(state["weights"], dtype=float).reshape(self.dim)
