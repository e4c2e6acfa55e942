"""Behaviour kept through the issue-15 refactors: fixed-seed chains of every built-in family
give the frames recorded at bbb1df2 (before the restructure), on every column recorded then.

The frames were written by the same configs at commit bbb1df2 (``CASES`` below). Analytic
families must match to a relative 1e-12 (float64); the GPT cases (slow, float32 torch) to a
relative 1e-5, since the order of float32 sums depends on the CPU's vector units.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sweep import load_config, run_chain

RECORDED = Path(__file__).parent / "data" / "frames_bbb1df2"
BASE = {"seed": 7, "collapse": {"metric": "real_nll", "tolerance": 0.1}}
CASES = {
    "gaussian": {"model": {"family": "gaussian", "dim": 2},
                 "recursion": {"generations": 6, "regime": "accumulate-subsample",
                               "real_fraction": 0.25},
                 "curation": {"scorer": "judge", "strength": 0.5, "judge_models": 2}},
    "linreg": {"model": {"family": "linreg", "dim": 4},
               "recursion": {"generations": 6, "regime": "accumulate"},
               "curation": {"scorer": "self", "strength": 0.3}},
    "categorical": {"model": {"family": "categorical", "outcomes": 20, "truth": "zipf"},
                    "recursion": {"generations": 8, "real_source": "fresh", "real_fraction": 0.2},
                    "curation": {"scorer": "oracle", "strength": 0.5}},
    "gmm": {"model": {"family": "gmm", "components": 3}, "recursion": {"generations": 4},
            "curation": {"scorer": "oracle-likelihood", "strength": 0.5, "selection": "sample"}},
    "gpt-truthlm": {"model": {"family": "gpt", "size": "xs", "train": {"epochs": 1}},
                    "data": {"source": "truth-lm", "test_size": 50},
                    "recursion": {"generations": 2, "samples_per_generation": 64,
                                  "regime": "accumulate", "init": "warm"},
                    "sampling": {"temperature": 0.9, "top_k": 8},
                    "curation": {"scorer": "self", "strength": 0.5}},
    "gpt-text": {"model": {"family": "gpt", "size": "xs", "train": {"epochs": 1}},
                 "data": {"source": "text", "block_size": 32, "test_size": 50},
                 "recursion": {"generations": 2, "samples_per_generation": 64},
                 "sampling": {"prompt_tokens": 4},
                 "curation": {"scorer": "rules", "strength": 0.5}},
}
SLOW = {"gpt-truthlm", "gpt-text"}
for _case in SLOW:  # recorded with early stopping, the GPT default at bbb1df2
    CASES[_case]["model"]["train"]["early_stopping"] = True

#: Columns issue 12 changed on purpose, left out of the comparison: the tail of linreg
#: (largest-||x|| inputs), categorical (rarest outcomes) and truth-lm (lowest-probability
#: tokens); GPT FLOPs (sampling counts the decoding steps run, validation passes count); GPT
#: sample metrics (2000 evaluation samples instead of 256).
_LM_SAMPLES = ["mean_length", "eos_rate", "distinct_1", "distinct_2", "distinct_4",
               "unigram_entropy", "repetition_rate", "sample_true_nll", "in_language_share",
               "minority_share", "minority_share_all"]
_LM_FLOPS = ["fit_flops", "sample_flops", "flops", "cumulative_flops"]
INTENDED = {"linreg": ["tail_nll"], "categorical": ["tail_nll"],
            "gpt-truthlm": ["tail_nll", *_LM_FLOPS, *_LM_SAMPLES], "gpt-text": [*_LM_FLOPS, *_LM_SAMPLES]}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in CASES])
def test_frame_equals_the_one_recorded_before_the_restructure(name):
    recorded = pd.read_parquet(RECORDED / f"{name}.parquet")
    now = run_chain(load_config({**BASE, **CASES[name]}))
    columns = [c for c in recorded.columns if c not in INTENDED.get(name, [])]
    if name in SLOW:
        # float32 torch: CPUs with other vector units (AVX-512 vs AVX2) sum in another order
        # and differ in the 7th significant digit (CI: 5.069997 vs 5.069996). A float32
        # relative tolerance of 1e-5 keeps every change of behaviour visible.
        pd.testing.assert_frame_equal(now[columns], recorded[columns], check_exact=False,
                                      rtol=1e-5, atol=0.0)
    else:
        # float64 numpy: bit for bit only by chance. numpy's SIMD sums peel a head that
        # depends on the array's address, which depends on what the process allocated before
        # (the test order; e.g. linreg failed alone and passed in the suite at 44f6286). A
        # reordered sum of n terms moves by at most (n - 1) eps sum|x| (eps = 1.1e-16; n <=
        # 2000 here: ~2e-13 relative for sums of like-signed terms); measured 6e-15 after 6
        # generations of refits. 1e-12 keeps any change of behaviour visible.
        pd.testing.assert_frame_equal(now[columns], recorded[columns], check_exact=False,
                                      rtol=1e-12, atol=0.0)
