"""The GPT's named sizes and training settings, without torch (configs read them cheaply).

``GPTTrainConfig`` is the one home of every training knob: its name, type, default, meaning
and valid range (``metadata``). ``sweep``'s ``model.train`` config section is generated from
it, so the config and the model cannot disagree on a default or drop a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Named sizes (n_layer, n_head, n_embd), roughly log-spaced in non-embedding params
#: (12 * n_layer * n_embd^2): xs ~55k, s ~0.33M, m ~1.8M, l ~7.4M, xl ~19M.
SIZES: dict[str, tuple[int, int, int]] = {
    "xs": (2, 2, 48),
    "s": (3, 3, 96),
    "m": (4, 4, 192),
    "l": (6, 8, 320),
    "xl": (8, 8, 448),
}


def _knob(default: object, doc: str, **bounds: float) -> object:
    return field(default=default, metadata={"doc": doc, **bounds})


@dataclass
class GPTTrainConfig:
    """How a GPT is trained each generation. Defaults measured on truth-lm (n = 1000, xs):
    held-out NLL 1.77 nats/token against 1.61 for the truth and 3.47 for uniform, about 2 s
    per fit on 2 CPU cores."""

    lr: float = _knob(1e-2, "AdamW peak learning rate.", gt=0)  # type: ignore[assignment]
    weight_decay: float = _knob(  # type: ignore[assignment]
        0.01, "AdamW weight decay (matrices only; biases, LayerNorms are not decayed).", ge=0)
    batch_size: int = _knob(32, "Sequences per optimisation step.", ge=1)  # type: ignore[assignment]
    epochs: float = _knob(  # type: ignore[assignment]
        8.0, "Budget: passes over this generation's training set, so accumulated data costs "
        "compute.", gt=0)
    token_budget: int | None = _knob(  # type: ignore[assignment]
        None, "If set, train on this many (counted) tokens instead of `epochs`.", ge=1)
    warmup: float = _knob(  # type: ignore[assignment]
        0.05, "Fraction of steps of linear warm-up before the cosine decay to lr / 10.",
        ge=0, lt=1)
    grad_clip: float = _knob(1.0, "Gradient norm clip (0 disables).", ge=0)  # type: ignore[assignment]
    early_stopping: bool = _knob(  # type: ignore[assignment]
        False, "Hold out val_fraction of the rows and stop after `patience` evaluations without "
        "improvement (validation passes are counted as FLOPs). Off by default: every fit runs "
        "its exact budget, so a config's cost does not vary with the seed.")
    val_fraction: float = _knob(  # type: ignore[assignment]
        0.1, "Share of the training rows held out when early_stopping (none below 20 rows).",
        ge=0, lt=1)
    patience: int = _knob(  # type: ignore[assignment]
        2, "Evaluations without validation improvement before stopping.", ge=1)
    evals_per_epoch: int = _knob(  # type: ignore[assignment]
        1, "Validation evaluations per epoch (at least 8 per fit for short budgets).", ge=1)
    eval_batch_size: int = _knob(  # type: ignore[assignment]
        256, "Sequences per batch when scoring and sampling.", ge=1)
