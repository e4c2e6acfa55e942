"""An exponential-distribution family defined outside collapse-sweep (the README example)."""

import numpy as np
from pydantic import Field

from sweep.config import FamilyConfig
from sweep.problems import Family, problem_from_truth


class ExponentialConfig(FamilyConfig):
    """model: {family: "collapse_exponential:FAMILY", rate: 2.0}"""

    rate: float = Field(1.0, gt=0, description="Rate of the true exponential distribution.")


class Exponential:
    """p(x) = rate exp(-rate x) on one column, fit by maximum likelihood (1 / mean)."""

    def __init__(self, rate: float = 1.0) -> None:
        self.rate, self.temperature, self.top_p, self.top_k = rate, 1.0, 1.0, 0

    def fit(self, data, rng):
        self.rate = 1.0 / float(np.mean(data))

    def reset(self, rng):  # a closed-form fit has nothing to re-initialise
        pass

    def sample(self, n, rng):  # p ** (1 / temperature) is an exponential of rate / T
        return rng.exponential(self.temperature / self.rate, size=(n, 1))

    def log_prob(self, data):
        return np.log(self.rate) - self.rate * data[:, 0]

    def sample_log_prob(self, data):  # the density sample() draws from
        rate = self.rate / self.temperature
        return np.log(rate) - rate * data[:, 0]

    def item_size(self, data):  # every item is one unit
        return None

    def flops(self, op, n_items):
        return 2.0 * n_items

    def summary(self):
        return {"rate": self.rate}

    def state_dict(self):
        return {"rate": np.array([self.rate])}

    def load_state_dict(self, state):
        self.rate = float(state["rate"][0])


FAMILY = Family(
    name="exponential", config=ExponentialConfig, title="Exponential",
    build=lambda cfg, problem, rng: Exponential(),
    problem=problem_from_truth(lambda cfg: Exponential(cfg.rate)),
    size_axes=("rate",))
