"""Model families. They know nothing about sweeps, Ray or files (see models/base.py)."""

from __future__ import annotations

from models.base import Model
from models.categorical import Categorical
from models.gaussian import Gaussian
from models.gmm import GaussianMixture
from models.linreg import LinearRegression

__all__ = ["Categorical", "Gaussian", "GaussianMixture", "LinearRegression", "Model"]
