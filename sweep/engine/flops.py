"""FLOP accounting of one generation: training, sampling and scoring.

For generation g >= 1, with m synthetic slots and strength s:

    candidates = ceil(m / (1 - s))
    sample_flops = model_{g-1}.flops("sample", candidates)      # discarded ones included
    score_flops  = sum(scorer.flops("score", candidates))        # 0 for scorer 'none'
    fit_flops    = model_g.flops("fit", |D_g|)
    flops        = fit_flops + sample_flops + score_flops

Generation 0 costs its fit (plus training the judges of a 'judge' scorer). Evaluation on
held-out data is measurement and is not counted. Each family documents its own formulas
in its ``flops`` method (e.g. the GPT: 6 N tokens to train, 2 N tokens to sample/score).
"""

from __future__ import annotations

from typing import Any


def generation_flops(*, model: Any, train_size: int, sampler: Any | None = None,
                     candidates: int = 0, scorers: list[Any] | None = None,
                     extra_fit: float = 0.0) -> dict[str, float]:
    fit = float(model.flops("fit", train_size)) + extra_fit
    sample = float(sampler.flops("sample", candidates)) if sampler is not None and candidates else 0.0
    score = float(sum(s.flops("score", candidates) for s in scorers or [])) if candidates else 0.0
    return {"fit_flops": fit, "sample_flops": sample, "score_flops": score,
            "flops": fit + sample + score}
