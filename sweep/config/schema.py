"""Typed configuration of one chain (and, with ``search``, of a sweep).

Every field is a pydantic field with a description; YAML files and ``--set a.b=v``
overrides are validated here, at the edge, and a bad value becomes one ``ConfigError``
line naming the field and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GPT_SIZES = ("xs", "s", "m", "l", "xl")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
NAME_MAX = 100  # a directory name: far below every filesystem's 255-byte limit
NAME_RULE = "allowed: letters, digits, _ . -; at most 100 characters; not '.' or '..'"
MAX_SAMPLES = 100_000_000
LM_SAMPLES = 1000  # default samples_per_generation for family gpt


class _Strict(BaseModel):
    # inf / nan are never a sensible size, rate or tolerance: refuse them at the edge.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- model families
class GaussianModel(_Strict):
    """A d-dimensional Gaussian fit by maximum likelihood (or the unbiased covariance)."""

    family: Literal["gaussian"] = "gaussian"
    dim: int = Field(1, ge=1, le=512, description="Dimension d of the Gaussian (the size axis).")
    estimator: Literal["mle", "unbiased"] = Field(
        "mle", description="Covariance estimator: 'mle' divides by n, 'unbiased' by n - 1."
    )


class LinregModel(_Strict):
    """Linear regression on a fixed design X (T x d) with known noise variance."""

    family: Literal["linreg"] = "linreg"
    dim: int = Field(10, ge=1, le=1000, description="Number of features d (the size axis).")
    design_rows: int | None = Field(
        None,
        ge=2,
        description="Rows T of the fixed design X; default: recursion.samples_per_generation.",
    )
    noise_var: float = Field(1.0, gt=0, description="Label noise variance s^2 (truth and synthetic).")


class CategoricalModel(_Strict):
    """K outcomes fit by empirical frequencies (Wright-Fisher when replacing)."""

    family: Literal["categorical"] = "categorical"
    outcomes: int = Field(10, ge=2, le=1_000_000, description="Number of outcomes K (the size axis).")
    truth: Literal["uniform", "zipf"] = Field("uniform", description="True distribution over outcomes.")
    zipf_exponent: float = Field(1.1, gt=0, description="Exponent a of the Zipf truth, p_k ~ k^-a.")
    pseudocount: float = Field(
        0.0, ge=0, description="Additive smoothing of the fit; 0 is the MLE of the theory."
    )
    nll_floor: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="Probability floor used only when scoring held-out data, so a lost outcome "
        "costs -log(floor) nats instead of infinity.",
    )


class GMMModel(_Strict):
    """A Gaussian mixture fit by EM (scikit-learn), truth a mixture with a minority mode."""

    family: Literal["gmm"] = "gmm"
    components: int = Field(2, ge=1, le=64, description="Components of the fitted mixture (size axis).")
    dim: int = Field(1, ge=1, le=64, description="Dimension of the data.")
    truth_components: int = Field(2, ge=1, le=64, description="Components of the true mixture.")
    minority_weight: float = Field(
        0.1, gt=0, lt=1, description="Weight of the last (minority) true component."
    )
    separation: float = Field(4.0, gt=0, description="Distance between true component means.")
    max_iter: int = Field(100, ge=1, description="EM iterations per fit.")


class GPTTrain(_Strict):
    """How a GPT is trained each generation."""

    # Defaults measured on truth-lm (n = 1000, xs): held-out NLL 1.77 nats/token against
    # 1.61 for the truth and 3.47 for uniform, about 2 s per fit on 2 CPU cores.
    lr: float = Field(1e-2, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(32, ge=1, description="Sequences per optimisation step.")
    epochs: float = Field(
        8.0, gt=0, description="Budget: passes over this generation's training set (default)."
    )
    token_budget: int | None = Field(
        None, ge=1, description="If set, train on this many tokens instead of `epochs`."
    )
    warmup: float = Field(0.05, ge=0, lt=1, description="Fraction of steps of linear warm-up.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient norm clip (0 disables).")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the training set held out for early stopping."
    )
    patience: int = Field(2, ge=1, description="Evaluations without improvement before stopping.")


class GPTModelCfg(_Strict):
    """A small decoder-only transformer (models/gpt.py)."""

    family: Literal["gpt"] = "gpt"
    size: Literal["xs", "s", "m", "l", "xl"] = Field(
        "xs", description="Named size, xs (~50k params) ... xl (~20M); overridden by n_* below."
    )
    n_layer: int | None = Field(None, ge=1, description="Explicit number of layers.")
    n_head: int | None = Field(None, ge=1, description="Explicit number of attention heads.")
    n_embd: int | None = Field(None, ge=8, description="Explicit embedding width.")
    train: GPTTrain = Field(default_factory=GPTTrain, description="Training per generation.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' uses the GPU Ray assigned (cuda) when present, else cpu."
    )


ModelConfig = Annotated[
    GaussianModel | LinregModel | CategoricalModel | GMMModel | GPTModelCfg,
    Field(discriminator="family"),
]


# --------------------------------------------------------------------------- data sources
class TruthData(_Strict):
    """Real data drawn from the family's own true distribution (analytic families)."""

    source: Literal["truth"] = "truth"
    test_size: int = Field(1000, ge=10, description="Held-out real examples for evaluation.")


class TruthLMData(_Strict):
    """A synthetic language with exactly computable probabilities (two dialects)."""

    source: Literal["truth-lm"] = "truth-lm"
    vocab_size: int = Field(32, ge=4, le=4096, description="Tokens, EOS (id 0) included.")
    max_len: int = Field(24, ge=2, le=1024, description="Longest sequence, in tokens.")
    minority_share: float = Field(
        0.05, gt=0, lt=1, description="Share of sequences from the minority dialect."
    )
    branching: int = Field(4, ge=1, description="Allowed next tokens per state (sparsity).")
    language_seed: int = Field(1234, description="Seed that builds the language itself.")
    test_size: int = Field(500, ge=10, description="Held-out real sequences for evaluation.")


class TextData(_Strict):
    """Local text (file, directory or glob), byte-level, in fixed-length blocks."""

    source: Literal["text"] = "text"
    path: str = Field(
        "builtin:tales", description="File, directory or glob; 'builtin:tales' is the shipped corpus."
    )
    block_size: int = Field(64, ge=2, le=4096, description="Bytes per training block.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Documents held out for testing.")
    test_size: int = Field(1000, ge=10, description="Most held-out blocks used for evaluation.")


DataConfig = Annotated[TruthData | TruthLMData | TextData, Field(discriminator="source")]


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
        "model 0 (base). Closed-form families ignore it.",
    )


class CurationConfig(_Strict):
    scorer: str = Field(
        "none",
        description="Scorer of candidates: none | self (own likelihood) | oracle (truth / sampling "
        "density ratio) | oracle-likelihood (truth likelihood) | judge (ensemble) | rules (text), "
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
    "real_nll", "tail_nll", "param_error", "var", "gini", "support", "minority_share", "kl"
]


class CollapseConfig(_Strict):
    metric: CollapseMetric = Field(
        "real_nll", description="Metric whose relative degradation vs generation 0 is the gap."
    )
    tolerance: float = Field(
        0.1, gt=0, description="Collapsed when the relative gap exceeds this (0.1 = 10%)."
    )
    at: Literal["last", "any"] = Field(
        "last", description="Judge the gap at the last generation, or at any generation."
    )
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
    model: ModelConfig = Field(default_factory=GaussianModel, description="Model family and size.")
    data: DataConfig | None = Field(
        None, description="Real data source; default: 'truth' (analytic) or 'truth-lm' (gpt)."
    )
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
    def _default_tags(cls, raw: Any) -> Any:
        # Sections may omit their tag: model.family defaults to gaussian, data.source to
        # the family's natural source.
        if isinstance(raw, dict):
            raw = dict(raw)
            model = raw.get("model")
            if isinstance(model, dict) and "family" not in model:
                raw["model"] = {"family": "gaussian", **model}
            family = (raw.get("model") or {}).get("family", "gaussian") if isinstance(
                raw.get("model"), dict | type(None)) else None
            recursion = raw.get("recursion")
            if family == "gpt" and (recursion is None or (isinstance(recursion, dict)
                                    and "samples_per_generation" not in recursion)):
                # Language models need more than the analytic default of 100 examples.
                raw["recursion"] = {**(recursion or {}), "samples_per_generation": LM_SAMPLES}
            data = raw.get("data")
            if isinstance(data, dict) and "source" not in data and family is not None:
                raw["data"] = {"source": "truth-lm" if family == "gpt" else "truth", **data}
        return raw

    @model_validator(mode="after")
    def _defaults_and_consistency(self) -> ChainConfig:
        is_lm = self.model.family == "gpt"
        if self.data is None:
            object.__setattr__(self, "data", TruthLMData() if is_lm else TruthData())
        if is_lm and self.data.source == "truth":
            raise ValueError("data.source: 'truth' is for analytic families; use truth-lm | text")
        if not is_lm and self.data.source != "truth":
            raise ValueError(
                f"data.source: {self.data.source!r} needs model.family gpt; analytic families use 'truth'"
            )
        if self.sampling.top_k and not is_lm:
            raise ValueError("sampling.top_k: only language models (family gpt) use top_k; set 0")
        if self.sampling.prompt_tokens and not is_lm:
            raise ValueError("sampling.prompt_tokens: only language models (family gpt) continue "
                             "prompts; set 0")
        block = getattr(self.data, "max_len", None) or getattr(self.data, "block_size", None)
        if is_lm and block is not None and self.sampling.prompt_tokens >= block:
            raise ValueError(f"sampling.prompt_tokens: {self.sampling.prompt_tokens} leaves nothing "
                             f"to generate in rows of {block} tokens; use fewer than {block}")
        if self.curation.scorer == "rules" and not is_lm:
            raise ValueError("curation.scorer: 'rules' scores text; use none | self | oracle | judge")
        if self.curation.scorer.startswith("oracle") and self.data.source == "text":
            raise ValueError(f"curation.scorer: {self.curation.scorer!r} needs a known truth; "
                             "text has none (use self | judge | rules)")
        from sweep.engine.curation import scorer_names

        if self.curation.scorer not in scorer_names():
            raise ValueError(f"curation.scorer: unknown {self.curation.scorer!r} "
                             f"(allowed: {', '.join(scorer_names())})")
        if self.collapse.metric in ("minority_share", "kl") and self.data.source != "truth-lm":
            raise ValueError(f"collapse.metric: {self.collapse.metric!r} needs data.source truth-lm")
        family_metric = {"param_error": "linreg", "var": "gaussian", "gini": "categorical",
                         "support": "categorical"}
        needed = family_metric.get(self.collapse.metric)
        if needed and self.model.family != needed:
            raise ValueError(f"collapse.metric: {self.collapse.metric!r} needs model.family {needed}")
        return self

    def fingerprint(self, *, keys: tuple[str, ...] | None = None) -> str:
        """Content hash of the config (or of some top-level sections), for caches."""
        dump = self.model_dump(mode="json")
        if keys is not None:
            dump = {k: dump[k] for k in keys}
        blob = json.dumps(dump, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
