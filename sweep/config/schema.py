"""Typed configuration of one chain (and, with ``search``, of a sweep).

Every field is a pydantic field with a description; YAML files and ``--set a.b=v``
overrides are validated here, at the edge, and a bad value becomes one ``ConfigError``
line naming the field and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from sweep.config.plugins import (
    FAMILIES,
    SCORERS,
    SOURCES,
    FamilyRules,
    PluginError,
    Registry,
    SourceRules,
)

DEFAULT_FAMILY = "gaussian"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
NAME_MAX = 100  # a directory name: far below every filesystem's 255-byte limit
NAME_RULE = "allowed: letters, digits, _ . -; at most 100 characters; not '.' or '..'"
MAX_SAMPLES = 100_000_000


class Section(BaseModel):
    """Base of every config section: unknown fields, and inf / nan (never a sensible size,
    rate or tolerance), are refused at the edge."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


_Strict = Section


# --------------------------------------------------------------------------- plugin sections
class FamilyConfig(Section):
    """Base of every model family's config (``model:``): ``family`` names it.

    A family subclasses this with its own fields (each with a description); the name is a
    registered family, an installed ``collapse_sweep.families`` entry point, or a dotted
    path ``package.module:FAMILY`` (see ``sweep.problems.Family``).
    """

    family: str = Field(DEFAULT_FAMILY, description="Model family (a registered name or "
                        "'package.module:FAMILY').")


class SourceConfig(Section):
    """Base of every real-data source's config (``data:``): ``source`` names it."""

    source: str = Field(description="Real-data source (a registered name or "
                        "'package.module:SOURCE').")
    test_size: int = Field(1000, ge=10, description="Held-out real examples for evaluation.")

    def row_length(self) -> int | None:
        """Tokens per item when the source makes token rows (prompts must be shorter)."""
        return None


class SectionError(ValueError):
    """A plugin section (``model:`` / ``data:``) failed its own model's validation."""

    def __init__(self, section: str, model: type[BaseModel], error: ValidationError) -> None:
        super().__init__(f"{section}: {error.errors()[0]['msg']}")
        self.section = section
        self.model = model
        self.error = error


def _plugin_section(registry: Registry[Any], section: str, key: str, raw: Any, default: str
                    ) -> Any:
    """Validate ``raw`` (a dict or a config instance) with its plugin's own config model."""
    if isinstance(raw, BaseModel):
        return raw
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{section}: expected a section (mapping), got {type(raw).__name__}")
    raw = {key: default, **(raw or {})}
    try:
        plugin = registry.get(str(raw[key]))
    except PluginError as exc:
        raise ValueError(str(exc)) from None
    try:
        return plugin.config.model_validate(raw)
    except ValidationError as exc:
        raise SectionError(section, plugin.config, exc) from None


# --------------------------------------------------------------------------- the recursion
class RecursionConfig(_Strict):
    generations: int = Field(
        10, ge=0, le=100_000, description="G: models 0..G are trained (G + 1 rows)."
    )
    samples_per_generation: int = Field(
        100, ge=2, le=MAX_SAMPLES,
        description="n: examples in each generation's new batch (gpt default: 1000)."
    )
    regime: Literal["replace", "accumulate", "accumulate-subsample"] = Field(
        "replace",
        description="replace: train on the new batch only; accumulate: real set plus every "
        "batch so far; accumulate-subsample: n examples drawn from that union.",
    )
    real_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of each new batch that is real data (0 = pure regime)."
    )
    real_source: Literal["fixed", "fresh"] = Field(
        "fixed",
        description="Real examples in later batches: 'fixed' re-draws from the generation-0 "
        "real set, 'fresh' draws new examples from the source.",
    )
    init: Literal["scratch", "warm", "base"] = Field(
        "scratch",
        description="Initialisation of model g: from scratch, from model g-1 (warm), or from "
        "model 0 (base; family hf: from its pretrained checkpoint, hf's default). Closed-form "
        "families ignore it.",
    )


class CurationConfig(_Strict):
    scorer: str = Field(
        "none",
        description="Scorer of candidates: none | self (own likelihood) | oracle (truth / sampling "
        "density ratio) | oracle-likelihood (truth likelihood) | judge (ensemble) | rules (text) | "
        "human (a simulated labeller: human_reference with human_error, label_cost per label), "
        "or a name registered with sweep.engine.curation.register_scorer.",
    )
    strength: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="s: generate ceil(m / (1 - s)) candidates for m synthetic slots, keep m.",
    )
    selection: Literal["top", "sample"] = Field(
        "top",
        description="'top' keeps the best m; 'sample' draws m without replacement with "
        "probability ~ exp(score / temperature) (Bradley-Terry style).",
    )
    selection_temperature: float = Field(1.0, gt=0, description="Temperature of 'sample' selection.")
    judge_models: int = Field(
        1,
        ge=1,
        le=8,
        description="Judges in the ensemble: model 0 plus (k - 1) models trained independently "
        "on real data.",
    )
    judge_families: list[dict[str, Any]] = Field(
        default_factory=list,
        description="More judges of other families (each a model section, e.g. {family: vae, "
        "size: xs}), each trained on fresh real data of this chain's source; the ensemble "
        "scores a candidate by its mean per-item log-likelihood over all judges.",
    )
    human_error: float = Field(
        0.0, ge=0, le=0.5,
        description="scorer human: probability that the simulated labeller orders a random "
        "pair of candidates against its reference (0 = the reference itself, 0.5 = coin flips).",
    )
    human_reference: str = Field(
        "oracle", description="scorer human: the scorer whose verdict a correct label gives "
        "(oracle where the truth is known)."
    )
    label_cost: float = Field(
        1.0, ge=0, description="scorer human: cost of one label (your unit: dollars, seconds); "
        "reported per generation (label_cost) and per chain (total_label_cost), beside FLOPs."
    )
    label_budget: int | None = Field(
        None, ge=0, description="scorer human: most labels over the whole chain; once spent, "
        "unlabelled candidates are kept at random (None: unlimited)."
    )


class SamplingConfig(_Strict):
    temperature: float = Field(1.0, gt=0, le=100, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass kept (1 = off).")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens (0 = off; LMs only).")
    prompt_tokens: int = Field(
        0, ge=0,
        description="LMs only: each synthetic example continues the first k tokens of a real "
        "training example (0 = generate from scratch). With curation, every prompt gets "
        "ceil(1 / (1 - strength)) continuations and the best one is kept.",
    )


CollapseMetric = Literal[
    "excess", "real_nll", "tail_nll", "param_error", "var", "gini", "support", "minority_share",
    "kl", "minority_nll", "minority_kl", "fd", "precision", "recall", "diversity", "class_tv",
    "denoise_loss",
]


class CollapseConfig(_Strict):
    metric: CollapseMetric = Field(
        "excess",
        description="Metric whose relative degradation vs generation 0 is the gap. 'excess' "
        "(default where the truth is known): the distance to the truth (KL per token on "
        "truth-lm, closed-form KL for gaussian/categorical, ||w - w*||^2 for linreg, a Monte "
        "Carlo KL for gmm), so gap 1.0 = model G twice as far from the truth as model 0. "
        "Text has no truth: the default there is 'real_nll' (baseline: model 0's held-out NLL).",
    )
    tolerance: float = Field(
        0.1, gt=0, description="Collapsed when the relative gap exceeds this (0.1 = 10% worse "
        "than model 0; on 'excess', 10% farther from the truth)."
    )
    at: Literal["last", "any"] = Field(
        "last", description="Judge the gap at the last generation, or at any generation."
    )
    confidence: float = Field(
        0.9, gt=0.5, lt=1, description="Sweeps: a config does not collapse when the one-sided "
        "upper confidence bound (this level) of its mean gap over search.seeds chains is within "
        "the tolerance.")
    stop_early: bool = Field(
        False,
        description="In sweeps: stop a chain once its gap exceeds stop_factor x tolerance.",
    )
    stop_factor: float = Field(3.0, ge=1, description="How far past tolerance counts as clearly collapsed.")


class ChainConfig(_Strict):
    """One recursive-training chain."""

    name: str = Field("chain", description="Run name: a directory under the storage "
                      "(letters, digits, _ . -; at most 100 characters; not '.' or '..').")
    seed: int = Field(0, ge=0, description="Master seed; every random stream derives from it.")
    model: SerializeAsAny[FamilyConfig] = Field(
        default_factory=FamilyConfig, description="Model family and size (default: gaussian).")
    data: SerializeAsAny[SourceConfig] | None = Field(
        None, description="Real data source; default: the family's first (analytic: 'truth', "
        "gpt: 'truth-lm').")
    recursion: RecursionConfig = Field(
        default_factory=RecursionConfig, description="Generations, regime, real data kept.")
    curation: CurationConfig = Field(
        default_factory=CurationConfig, description="How synthetic candidates are filtered.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="How models generate their samples.")
    collapse: CollapseConfig = Field(
        default_factory=CollapseConfig, description="The collapse criterion (quality gap).")
    search: dict[str, Any] | None = Field(
        None, description="Sweep search section (validated by sweep.search.space when a sweep runs)."
    )
    resources: dict[str, float] | None = Field(
        None, description="Per-trial resources for sweeps, e.g. {cpu: 1, gpu: 0.25}."
    )
    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Where a sweep's metrics go besides the run directory: tensorboard "
        "(RUN_DIR/trials/*/tb), wandb (one run per trial; offline unless a W&B key is set up; "
        "WANDB_PROJECT / WANDB_MODE honoured), mlflow (one run per trial in MLFLOW_TRACKING_URI, "
        "default sqlite:///RUN_DIR/mlflow.db). wandb / mlflow: pip install "
        "'collapse-sweep[wandb]' / '[mlflow]'.")

    @field_validator("loggers")
    @classmethod
    def _loggers_once_each(cls, loggers: list[str]) -> list[str]:
        return list(dict.fromkeys(loggers))

    @field_validator("name")
    @classmethod
    def _name_is_one_path_component(cls, name: str) -> str:
        if len(name) > NAME_MAX:
            raise ValueError(f"name: at most {NAME_MAX} characters, got {len(name)} ({NAME_RULE})")
        if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"name: {name!r} is not a run name ({NAME_RULE})")
        return name

    @model_validator(mode="before")
    @classmethod
    def _plugin_sections(cls, raw: Any) -> Any:
        # model: and data: are validated by their plugin's own config model; sections may
        # omit their tag (model.family defaults to gaussian, data.source to the family's
        # first source), and a family may set its own default samples_per_generation.
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        raw["model"] = model = _plugin_section(FAMILIES, "model", "family", raw.get("model"),
                                               DEFAULT_FAMILY)
        family = FAMILIES.get(model.family)
        recursion = raw.get("recursion")
        if family.samples_per_generation is not None and (recursion is None or (
                isinstance(recursion, dict) and "samples_per_generation" not in recursion)):
            raw["recursion"] = {**(recursion or {}),
                                "samples_per_generation": family.samples_per_generation}
        recursion = raw.get("recursion")
        if family.default_init is not None and (recursion is None or (
                isinstance(recursion, dict) and "init" not in recursion)):
            raw["recursion"] = {**(recursion or {}), "init": family.default_init}
        raw["data"] = _plugin_section(SOURCES, "data", "source", raw.get("data"),
                                      family.sources[0])
        return raw

    @model_validator(mode="after")
    def _consistency(self) -> ChainConfig:
        family = FAMILIES.get(self.model.family)
        data = self.data
        assert data is not None  # filled by _plugin_sections
        source = SOURCES.get(data.source)
        lm = family.tokens
        if data.source not in family.sources:
            raise ValueError(f"data.source: {data.source!r} does not feed model.family "
                             f"{self.model.family!r} (allowed: {' | '.join(family.sources)})")
        if self.sampling.top_k and not lm:
            raise ValueError("sampling.top_k: only language models (token families such as gpt) "
                             "use top_k; set 0")
        if self.sampling.prompt_tokens and not lm:
            raise ValueError("sampling.prompt_tokens: only language models (token families such "
                             "as gpt) continue prompts; set 0")
        block = data.row_length()
        if lm and block is not None and self.sampling.prompt_tokens >= block:
            raise ValueError(f"sampling.prompt_tokens: {self.sampling.prompt_tokens} leaves nothing "
                             f"to generate in rows of {block} tokens; use fewer than {block}")
        scorer = self.curation.scorer
        if scorer == "rules" and not lm:
            raise ValueError("curation.scorer: 'rules' scores text; use none | self | oracle | judge")
        if scorer.startswith("oracle") and not source.has_truth:
            raise ValueError(f"curation.scorer: {scorer!r} needs a known truth; "
                             f"{data.source} has none (use self | judge | rules)")
        try:
            SCORERS.get(scorer)
        except PluginError as exc:
            raise ValueError(str(exc)) from None
        self._check_human_and_judges(source)
        self._check_collapse_metric(family, source)
        return self

    def _check_human_and_judges(self, source: SourceRules) -> None:
        cur = self.curation
        if cur.scorer == "human":
            if cur.human_reference in ("human", "none"):
                raise ValueError(f"curation.human_reference: {cur.human_reference!r} cannot be a "
                                 "labeller's reference; use oracle | oracle-likelihood | self | ...")
            if cur.human_reference.startswith("oracle") and not source.has_truth:
                raise ValueError(f"curation.human_reference: {cur.human_reference!r} needs a known "
                                 f"truth; {source.name} has none")
            try:
                SCORERS.get(cur.human_reference)
            except PluginError as exc:
                raise ValueError(f"curation.human_reference: {exc}") from None
        if cur.judge_families and cur.scorer != "judge":
            raise ValueError("curation.judge_families: only scorer judge uses judges")
        for i, spec in enumerate(cur.judge_families):
            try:
                section = _plugin_section(FAMILIES, f"curation.judge_families.{i}", "family", spec,
                                          DEFAULT_FAMILY)
            except SectionError as exc:
                err = exc.error.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"curation.judge_families.{i}.{loc}: {err['msg'].lower()}") from None
            judge = FAMILIES.get(section.family)
            if self.data is not None and self.data.source not in judge.sources:
                raise ValueError(f"curation.judge_families.{i}.family: {section.family!r} cannot "
                                 f"judge {self.data.source} items (it learns from "
                                 f"{' | '.join(judge.sources)})")

    def _check_collapse_metric(self, family: FamilyRules, source: SourceRules) -> None:
        """A family's or source's own metric needs that family or source."""
        metric = self.collapse.metric
        if metric == "excess" and not source.has_truth:
            if "metric" in self.collapse.model_fields_set:
                raise ValueError(f"collapse.metric: 'excess' needs a known truth; "
                                 f"{self.data.source} has none (use real_nll, whose baseline is "
                                 "model 0's held-out NLL)")
            object.__setattr__(self.collapse, "metric", "real_nll")
            return
        if metric in family.metrics or metric in source.metrics:
            return
        for other_source in SOURCES.registered().values():
            if metric in other_source.metrics:
                raise ValueError(f"collapse.metric: {metric!r} needs data.source {other_source.name}")
        for other in FAMILIES.registered().values():
            if metric in other.metrics:
                raise ValueError(f"collapse.metric: {metric!r} needs model.family {other.name}")

    def fingerprint(self, *, keys: tuple[str, ...] | None = None) -> str:
        """Content hash of the config (or of some top-level sections), for caches."""
        dump = self.model_dump(mode="json")
        dump.pop("loggers", None)  # where metrics are sent does not change a chain
        if keys is not None:
            dump = {k: dump[k] for k in keys}
        blob = json.dumps(dump, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
