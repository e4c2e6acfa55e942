"""The ``search:`` section of a sweep config: validated at the edge, before Ray starts.

```yaml
search:
  sampler: cheapest         # cheapest | tpe | nsga2 | gp | random | grid
  trials: 64                # Optuna trials (for grid: at most the grid size)
  concurrency: 8            # trials running at once
  seeds: 5                  # chains per trial (seeds seed .. seed+4): objectives are means
  confirm: {top: 3, seeds: 20}   # re-run the cheapest plausible configs on unseen seeds
  space:                    # config path -> exactly one distribution
    recursion.regime: {choice: [replace, accumulate, accumulate-subsample]}
    recursion.real_fraction: {uniform: [0.0, 1.0]}            # {uniform: [lo, hi], step: 0.25}
    recursion.samples_per_generation: {int: [50, 400], log: true}
    sampling.temperature: {loguniform: [0.5, 2.0]}
    curation.strength: {grid: [0.0, 0.5, 0.9]}               # alias of choice
  objectives: {quality_gap: min, total_flops: min}
```

Grid sampler: every parameter must have finitely many values: ``choice``/``grid`` lists, or
``uniform``/``int`` with a ``step`` (the grid is ``lo, lo + step, ... <= hi``).
Every problem raises ``ConfigError`` with one line ``search.<field>: problem (allowed: ...)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweep.config import ChainConfig, ConfigError, format_validation_error, trial_config
from sweep.config.defaults import DEFAULT_OBJECTIVES
from sweep.engine.replicates import DEFAULT_SEEDS

SAMPLERS = ("cheapest", "tpe", "nsga2", "gp", "random", "grid")
#: Per-trial results an objective may name (all are columns of results.parquet).
OBJECTIVES = ("quality_gap", "total_flops", "final_real_nll", "generations_run", "total_label_cost")
KINDS = ("choice", "grid", "uniform", "loguniform", "int")
_FIELD = {"int": "integer"}  # `int` is a YAML key but not a good attribute name

Scalar = bool | int | float | str


class ParamSpec(BaseModel):
    """One searched config path: exactly one of the distribution keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Scalar] | None = Field(None, description="Categorical values.")
    grid: list[Scalar] | None = Field(None, description="Alias of choice (reads better for grid).")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], float.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], float, log scale.")
    integer: tuple[int, int] | None = Field(None, alias="int",
                                            description="[low, high] inclusive integers.")
    step: float | None = Field(None, gt=0, description="Discretisation of uniform / int.")
    log: bool = Field(False, description="Log scale for int.")

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [k for k in KINDS if self._get(k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {given or 'none'})")
        kind = given[0]
        if kind in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{kind}: empty list (give at least one value)")
            if len({repr(v) for v in self.values}) != len(self.values):
                raise ValueError(f"{kind}: duplicate values {self.values}")
        else:
            lo, hi = self._get(kind)
            if lo > hi:
                raise ValueError(f"{kind}: low {lo} > high {hi}")
            if kind == "loguniform" and lo <= 0:
                raise ValueError(f"loguniform: low must be > 0, got {lo}")
        if self.step is not None and kind not in ("uniform", "int"):
            raise ValueError(f"step: only for uniform or int, not {kind}")
        if self.log and kind != "int":
            raise ValueError("log: only for int (use loguniform for floats)")
        return self

    def _get(self, kind: str) -> Any:
        return getattr(self, _FIELD.get(kind, kind))

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if self._get(k) is not None)

    @property
    def values(self) -> list[Any] | None:
        """The finite value list (choice / grid / stepped range), else None."""
        if self.choice is not None or self.grid is not None:
            return list(self.choice if self.choice is not None else self.grid)
        if self.step is not None:
            lo, hi = self._get(self.kind)
            n = int(math.floor((hi - lo) / self.step + 1e-9)) + 1
            vals = [lo + i * self.step for i in range(n)]
            return [int(round(v)) for v in vals] if self.kind == "int" else [round(v, 12) for v in vals]
        return None

    def probes(self) -> list[Any]:
        """Values whose config must validate: every listed value, or both ends of a range."""
        vals = self.values
        if vals is not None:
            return vals
        lo, hi = self._get(self.kind)
        return [lo, hi] if lo != hi else [lo]

    def distribution(self, *, grid: bool = False) -> Any:
        """The Optuna distribution (``grid`` samplers get categorical value lists)."""
        import optuna.distributions as od

        vals = self.values
        if vals is not None and (grid or self.kind in ("choice", "grid")):
            return od.CategoricalDistribution(vals)
        if self.kind == "int":
            lo, hi = self.integer
            return od.IntDistribution(lo, hi, log=self.log, step=int(self.step or 1))
        if self.kind == "loguniform":
            return od.FloatDistribution(*self.loguniform, log=True)
        return od.FloatDistribution(*self.uniform, step=self.step)


class ConfirmSpec(BaseModel):
    """``search.confirm``: the winner's-curse check after the search."""

    model_config = ConfigDict(extra="forbid")

    top: int = Field(3, ge=0, le=100, description="How many of the cheapest feasible configs "
                     "to re-run (0: no confirmation; the answer is then the search's own).")
    seeds: int = Field(20, ge=2, le=1000, description="Fresh seeds per re-run config, never used "
                       "by the search; the answer is the cheapest whose upper bound on these "
                       "seeds is within the tolerance. The search benchmark's optimum (mean gap "
                       "0.016, tolerance 0.03, chain sd 0.020) passes with 20 seeds 95% of the "
                       "time, with 10 seeds 78%.")


class SearchSpec(BaseModel):
    """The validated ``search:`` section."""

    model_config = ConfigDict(extra="forbid")

    sampler: Literal["cheapest", "tpe", "nsga2", "gp", "random", "grid"] = Field(
        "cheapest", description="Optuna sampler. cheapest (default): the cheapest configuration "
        "whose gap stays within the tolerance, found by walking up the predicted cost and "
        "skipping what is plausibly infeasible (needs total_flops among the objectives; "
        "no configuration is asked twice); tpe: multi-objective TPE, a picture of the whole "
        "gap/cost trade-off; nsga2: a genetic search that spreads along the Pareto front, for large budgets; gp: "
        "Gaussian process, for few expensive trials (1-3 s per suggestion); random; grid "
        "(needs a finite space).")
    trials: int = Field(16, ge=1, description="Number of Optuna trials (grid: capped at its size).")
    concurrency: int = Field(2, ge=1, description="Trials running at once.")
    batch: int | Literal["auto"] = Field(
        "auto", description="Optuna trials per Tune trial, run one after another in the same "
        "process: each Tune trial costs the driver ~0.1-0.2 s, most of a sub-second chain. "
        "auto (default): 1 until trials have been timed, then as many as fill ~5 s (at most "
        "32, fewer near the end so that the workers finish together); long trials stay 1. "
        "An integer fixes it; 1 turns batching off. Each Optuna trial keeps its own "
        "directory, ledger records, checkpoints and TensorBoard run.")
    seeds: int = Field(
        DEFAULT_SEEDS, ge=1, le=1000, description="Chains per trial (replicates, seeds seed .. seed+k-1, the "
        "same for every trial so generation 0 is shared): Optuna gets the mean of each objective; "
        "a trial is feasible when the one-sided collapse.confidence upper bound of its mean gap "
        "is within the tolerance (Student t; with 1 seed the bound is the single gap).")
    confirm: ConfirmSpec = Field(
        default_factory=lambda: ConfirmSpec(),
        description="After the search, re-run the cheapest feasible configs on fresh seeds.")
    space: dict[str, ParamSpec] = Field(description="Config path -> distribution.")
    objectives: dict[str, Literal["min", "max"]] = Field(
        default_factory=lambda: dict(DEFAULT_OBJECTIVES),
        description=f"Objectives and directions, from {', '.join(OBJECTIVES)}.")
    sampler_seed: int | None = Field(None, description="Seed of the sampler (default: config seed).")
    check: bool = Field(
        True, description="Run the health check (`collapse-sweep check`: is model 0 converged, "
        "is the gap's noise below the tolerance?) on the base config before the trials, record "
        "it in RUN_DIR/health.json and flag the sweep in analyze/report when it fails. It costs "
        "about 3 x (generations + 2) model fits; false skips it (`run --no-check`).")

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        """One message for a bad batch (pydantic's for the union named its int branch)."""
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ValueError(f"{value!r}: an integer >= 1, or auto") from None

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if not self.space:
            raise ValueError("space: empty (search at least one config path)")
        if isinstance(self.batch, int) and self.batch < 1:
            raise ValueError(f"batch: {self.batch}: at least 1 (or auto)")
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise ValueError(f"objectives.{name}: unknown objective (allowed: {', '.join(OBJECTIVES)})")
        if not self.objectives:
            raise ValueError(f"objectives: empty (allowed: {', '.join(OBJECTIVES)})")
        if self.sampler == "cheapest" and "total_flops" not in self.objectives:
            raise ValueError("sampler: cheapest walks up the cost, so objectives must include "
                             "total_flops (or pick tpe, nsga2, gp, random, grid)")
        if self.sampler == "grid":
            for path, spec in self.space.items():
                if spec.values is None:
                    raise ValueError(f"space.{path}: the grid sampler needs choice/grid values "
                                     "or uniform/int with a step")
        return self

    @property
    def grid_size(self) -> int | None:
        if self.sampler != "grid":
            return None
        return math.prod(len(spec.values or []) for spec in self.space.values())

    @property
    def num_trials(self) -> int:
        """Trials to run: ``trials``, capped at the grid size for the grid sampler."""
        size = self.grid_size
        return min(self.trials, size) if size is not None else self.trials

    def distributions(self) -> dict[str, Any]:
        grid = self.sampler == "grid"
        return {path: spec.distribution(grid=grid) for path, spec in self.space.items()}

    def grid_values(self) -> dict[str, list[Any]]:
        return {path: list(spec.values or []) for path, spec in self.space.items()}


def validate_search(config: ChainConfig) -> SearchSpec:
    """Validate ``config.search`` (and ``config.resources``) or raise a one-line ConfigError.

    Every searched path is checked by building the chain config with each listed value (or
    both ends of a range), so a typo or a value the chain rejects fails here, before Ray.
    """
    if not config.search:
        raise ConfigError("search: missing (a sweep needs a search section with a space)")
    raw = dict(config.search)
    sampler = raw.get("sampler", SearchSpec.model_fields["sampler"].default)
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler: unknown sampler {sampler!r} (allowed: {', '.join(SAMPLERS)})")
    for name in raw.get("objectives") or {}:
        if name not in OBJECTIVES:
            raise ConfigError(f"search.objectives.{name}: unknown objective "
                              f"(allowed: {', '.join(OBJECTIVES)})")
    try:
        spec = SearchSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_search_error(exc)) from None
    for path, param in spec.space.items():
        for value in param.probes():
            try:
                trial_config(config, {path: value})
            except ConfigError as exc:
                raise ConfigError(f"search.space.{path}: value {value!r} is not valid: {exc}") from None
    _check_resources(config.resources)
    return spec


def _search_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "value_error":
        text = str((err.get("ctx") or {}).get("error", err["msg"]))
        return f"search.{loc}: {text}" if loc else f"search.{text}"
    if err["type"] == "extra_forbidden":
        allowed = (list(SearchSpec.model_fields) if len(err["loc"]) == 1
                   else list(ConfirmSpec.model_fields) if err["loc"][0] == "confirm"
                   else [*KINDS, "step", "log"])
        return f"search.{loc}: unknown field (allowed: {', '.join(allowed)})"
    return f"search.{format_validation_error(exc)}"


def _check_resources(resources: dict[str, float] | None) -> None:
    for key, value in (resources or {}).items():
        if key not in ("cpu", "gpu"):
            raise ConfigError(f"resources.{key}: unknown resource (allowed: cpu, gpu)")
        if value < 0:
            raise ConfigError(f"resources.{key}: must be >= 0, got {value}")
    if resources and resources.get("cpu", 1) == 0 and resources.get("gpu", 0) == 0:
        raise ConfigError("resources: a trial needs some cpu or gpu")
