"""Language-model collapse on truth-lm shows the published shapes (slow: ~2-3 min).

One small GPT (xs) per chain, n = 1000 sequences per generation, 5 generations, a truth
language whose minority dialect holds 20% of the mass (at 5% an xs model barely learns
the minority from 1000 sequences, and its share is pure sampling noise).

Thresholds come from the runs recorded beside each test (seed 0, CPU, torch 2.13); each
sits well inside the measured effect, and the direction of every effect is what the
literature reports (REFERENCES.md, "Language models").
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from sweep import load_config, run_chain
from sweep.engine.chain import Chain
from sweep.files.checkpoint import save_checkpoint
from tests.processes import cli_chain

pytestmark = pytest.mark.slow

# Recorded with early stopping (the default before the fixed-budget default of issue 12).
BASE = {"model": {"family": "gpt", "size": "xs", "train": {"early_stopping": True}},
        "recursion": {"generations": 5},
        "data": {"source": "truth-lm", "minority_share": 0.2}}


def chain(seed: int = 0, **sections) -> pd.DataFrame:
    tree = {k: dict(v) for k, v in BASE.items()}
    for key, value in sections.items():
        tree.setdefault(key, {}).update(value)
    return run_chain(load_config(tree), seed=seed)


def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pool():
    """Chains two at a time, one thread each. An xs GPT's chain is no faster on two threads
    than on one (seed 0, 5 generations: 19-24 s either way on the 2-core CI machine), so two
    processes halve the module's wall time. The thread count changes float summation order
    and so the trajectories; the recorded draws below include one-thread runs."""
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=_one_thread) as ex:
        yield ex


MIXED = {"recursion": {"real_fraction": 0.5}}


# The chains on the default language, one per regime or curation: name -> (seed, sections).
DEFAULT_JOBS = {
    "replace": (0, {}),
    "accumulate": (0, {"recursion": {"regime": "accumulate"}}),
    "subsample": (0, {"recursion": {"regime": "accumulate-subsample"}}),
    "self": (0, {"curation": {"scorer": "self", "strength": 0.8}}),
    "likelihood": (0, {"curation": {"scorer": "oracle-likelihood", "strength": 0.5}}),
    "mixed": (0, MIXED),
    "mixed_oracle": (0, {**MIXED, "curation": {"scorer": "oracle", "strength": 0.5,
                                               "selection": "sample"}}),
}


@pytest.fixture(scope="module")
def submitted(pool) -> dict:
    """Every chain of this module's two fixtures, submitted to the pool at once (no worker
    waits at the end of the first fixture's chains): name -> future of its frame."""
    jobs = {**DEFAULT_JOBS, **{(name, seed): (seed, {**COVERED, **arm})
                               for name, arm in COVERED_ARMS.items() for seed in SEEDS}}
    return {name: pool.submit(chain, seed, **sections) for name, (seed, sections) in jobs.items()}


@pytest.fixture(scope="module")
def runs(submitted) -> dict[str, pd.DataFrame]:
    """Every chain on the default language."""
    return {name: submitted[name].result() for name in DEFAULT_JOBS}


def gap(df: pd.DataFrame, col: str = "real_nll") -> float:
    return float(df[col].iloc[-1] / df[col].iloc[0] - 1)


def test_replace_degrades_accumulate_holds_subsample_in_between(runs):
    # Recorded: replace +24% (1.94 -> 2.41 nats/token), subsample ~+4%, accumulate ~0%.
    assert gap(runs["replace"]) > 0.12
    assert abs(gap(runs["accumulate"])) < 0.03
    assert gap(runs["accumulate"]) < gap(runs["subsample"]) < gap(runs["replace"])
    assert runs["replace"].real_nll.is_monotonic_increasing


def test_replace_erodes_the_minority_dialect(runs):
    # Recorded: minority share of in-language samples 0.125 at generation 0, 0.039-0.093
    # over generations 3-5 (sampling noise with 256 samples is ~0.02).
    share = runs["replace"].minority_share
    assert share.iloc[-3:].mean() < 0.8 * share.iloc[0]


def test_strong_self_curation_raises_tail_nll(runs):
    # Recorded: keeping the 20% most self-likely samples drives tail NLL 2.98 -> 14.9 while
    # the uncurated chain reaches 3.14: the model's modes take over, the tail disappears.
    curated = runs["self"]
    assert curated.tail_nll.iloc[-1] > 2 * runs["replace"].tail_nll.iloc[-1]
    assert curated.distinct_2.iloc[-1] < runs["replace"].distinct_2.iloc[-1]


def test_maximising_the_truths_likelihood_collapses_onto_its_modes(runs):
    # Recorded: the top half by the truth's per-token likelihood drives real NLL 1.94 ->
    # 4.10 (vs 2.41 uncurated) and distinct-2 0.134 -> 0.049: the reward's maximisers
    # take over (Ferbach et al.), although every kept sample is 'high quality'.
    curated = runs["likelihood"]
    assert gap(curated) > gap(runs["replace"])
    assert curated.sample_true_nll.iloc[-1] < runs["replace"].sample_true_nll.iloc[-1]


def test_density_ratio_oracle_with_real_data_keeps_the_tail_and_the_quality(runs):
    """Half of each batch real (Ferbach's condition), the other half picked from 2x candidates
    by p_truth / p_model (``oracle``, Gumbel sampling): what the oracle buys on truth-lm.

    Recorded at generation 5, chain seeds 0 / 1 / 2 (uncurated -> oracle):
      tail_nll          3.049 / 2.964 / 3.197  ->  2.817 / 2.844 / 2.935  (-0.23 / -0.12 / -0.26)
      sample_true_nll   3.036 / 3.069 / 3.057  ->  2.570 / 2.927 / 2.747  (-0.47 / -0.14 / -0.31)
      real_nll gap      6.5% / 5.8% / 5.9%     ->  5.5% / 5.0% / 7.4%     (no consistent change)
    The thresholds are half the smallest recorded improvement. The real-NLL gap is *not*
    lowered on this language: model 0 covers it poorly (KL to the truth ~3 nats per row,
    ~7 on minority rows), so selection can only keep what the model already produces, and
    sequence-level selection under-represents long rows (each token risks an error). No
    rule we tried (top, sampled, pairwise, Poisson, importance resampling up to 500k
    candidates, grammar verifier, length-stratified) beat no curation on real_nll here; on
    a language the model covers, the oracle does (next tests). See notes/ORACLE_CURATION.md.
    """
    plain, oracle = runs["mixed"], runs["mixed_oracle"]
    assert oracle.tail_nll.iloc[-1] < plain.tail_nll.iloc[-1] - 0.06
    assert oracle.sample_true_nll.iloc[-1] < plain.sample_true_nll.iloc[-1] - 0.07


# A language the xs model covers from 1000 sequences: 12 tokens, 2 successors per token,
# rows of at most 12 tokens. Model 0's KL to the truth is ~0.07 nats/token (~0.5 per row),
# against ~0.3 nats/token (~3 per row) on the default 32-token language.
COVERED = {"data": {"vocab_size": 12, "branching": 2, "max_len": 12}}
ORACLE = {"curation": {"scorer": "oracle", "strength": 0.9, "selection": "sample"}}
PROMPTED = {"sampling": {"prompt_tokens": 2}}
SEEDS = (0, 1, 2)


# The arms the tests assert on the covered language. The unprompted oracle arm is recorded
# in the test below, not run: its gain needs ~12 seeds to show.
COVERED_ARMS = {"none": {}, "prompted": PROMPTED, "prompted_oracle": {**PROMPTED, **ORACLE}}


@pytest.fixture(scope="module")
def covered(submitted) -> dict[str, list[float]]:
    """Real-NLL gap at generation 5 per seed, for each arm on the covered language."""
    return {name: [gap(submitted[name, seed].result()) for seed in SEEDS] for name in COVERED_ARMS}


def test_oracle_lowers_the_gap_on_a_language_the_model_covers(covered):
    """Where the model's samples cover the language and each synthetic row starts from a real
    2-token prompt, the density-ratio oracle (10 candidates per slot, Gumbel sampling by
    p_truth / p_model) lowers the real-NLL gap, as it does on the Gaussian; on the default
    language it does not (see the test above).

    Recorded real-NLL gap (%) at generation 5, seeds 0 / 1 / 2 with torch's default threads
    on the 2-core CI machine, then seeds 0-5 with OMP_NUM_THREADS=1 (float summation order
    changes the trajectories, so these are nine draws of the same experiment):
      none              11.8 19.9 23.9 | 22.4 20.6 27.0 15.1 17.4 16.7
      oracle             8.1  9.6 15.3 |  9.3 13.0 14.4 12.4  9.1 13.2
      prompted          13.5 13.2 13.2 | 12.0 10.4 15.1 14.1  9.4 14.8
      prompted + oracle  2.8  5.2  7.8 |  6.2  4.2  4.8  6.3  4.8  5.6
    Prompted, the gain is 7.6 points (sd 2.1, the smallest 4.6): the test asks for 2.3
    points on every seed, and the curated gap stays under 10% (the largest of nine was 7.8%).

    Unprompted, the gain is real but too noisy for three seeds, so it is not asserted: the
    nine draws above gave 7.8 points (sd 3.8), but on another CPU (AMD EPYC, AVX2 only;
    2026-12-02) seeds 0-11, one thread each, gave (none -> oracle)
      11.8->13.4 18.1->11.6 17.3->13.3 10.9->15.0 14.7->9.1 17.1->20.4
      19.8->10.8 13.8->9.1 19.4->21.2 20.3->7.1 17.0->5.0 13.5->9.4
    a gain of 4.1 points (sd 5.8, four seeds of twelve worse): the mean of three seeds has
    sd 3.3, so no threshold above zero holds on both machines with a false failure rate
    near 1% (the earlier 3-point bound failed there, 2.9 on seeds 0-2). Showing it needs
    ~12 seeds per arm (2.33 x 5.8 / sqrt(12) = 3.9 < 4.1), ~7 minutes of this suite.
    """
    prompted, prompted_oracle = np.array(covered["prompted"]), np.array(covered["prompted_oracle"])
    assert (prompted_oracle < prompted - 0.023).all()
    assert prompted_oracle.max() < 0.1  # within a few percent of generation 0


def test_real_prompts_slow_collapse(covered):
    """Continuing real 2-token prefixes keeps the start of every synthetic row real. From the
    nine recorded draws above, prompting lowers the gap by 6.6 points on average (sd 4.8,
    one draw of nine was 1.7 points worse), so the mean of three seeds (sd 2.8) must be
    lower by 1 point (about two sd below the average)."""
    assert np.mean(covered["prompted"]) < np.mean(covered["none"]) - 0.01


def test_gpt_chain_resumes_to_the_same_frame(tmp_path):
    config = load_config({"model": {"family": "gpt", "size": "xs", "train": {"epochs": 2}},
                          "recursion": {"generations": 3, "samples_per_generation": 200,
                                        "regime": "accumulate", "init": "warm"},
                          "curation": {"scorer": "self", "strength": 0.3}})
    full = run_chain(config)
    partial = Chain(config)
    partial.step()
    partial.step()
    save_checkpoint(tmp_path, partial.state_dict())
    pd.testing.assert_frame_equal(run_chain(config, checkpoint_dir=tmp_path), full)


def test_text_chain_from_the_cli_replace_degrades_more_than_accumulate(tmp_path):
    """The config's own comment line, typed twice at once (one thread each, as the pool
    above): replace loses more real-data likelihood than accumulate."""
    regimes = ("replace", "accumulate")
    with ThreadPoolExecutor(2) as threads:
        outs = dict(zip(regimes, threads.map(lambda regime: cli_chain(
            ["configs/text-chain.yaml", "--set", f"recursion.regime={regime}"],
            tmp_path / regime), regimes), strict=True))
    assert gap(outs["replace"]) > gap(outs["accumulate"]) + 0.02
