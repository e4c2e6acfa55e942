"""The ``hf`` family on a tiny random GPT-2 with a tokenizer trained here on the shipped
corpus, saved to a temporary directory: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from models.hf import HFModel, HFTrainConfig, make_tiny_checkpoint  # noqa: E402
from sweep.cli import main  # noqa: E402
from sweep.config import ConfigError, load_config  # noqa: E402
from sweep.engine.chain import Chain  # noqa: E402
from sweep.problems.sources import BUILTIN_DIR, TextCorpus  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: two threads only spin-wait on a loaded machine
    yield make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"), BUILTIN_DIR / "tales.txt")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def blocks():
    corpus = TextCorpus("builtin:tales", block_size=48)
    return corpus.train_blocks()[:200], corpus.test_blocks()[:64]


def test_fit_lowers_nll_and_state_round_trips(tiny, blocks):
    train, test = blocks
    m = HFModel(str(tiny), block_size=48, train=HFTrainConfig(epochs=2, batch_size=16), device="cpu")
    before = m.log_prob(test)
    assert before.shape == (64,) and np.isfinite(before).all() and (before < 0).all()
    m.fit(train, np.random.default_rng(0))
    after = m.log_prob(test)
    assert after.mean() > before.mean() + 0.1 * 48  # > 0.1 nats per byte better
    other = HFModel(str(tiny), block_size=48, device="cpu")
    other.load_state_dict(m.state_dict())
    np.testing.assert_allclose(other.log_prob(test), after, rtol=1e-6)
    # FLOPs: 6 N per token trained, 2 N per token sampled.
    assert m.flops("fit", 200) == pytest.approx(6 * m.n_flop_params * m._fit.tokens)
    m.sample(8, np.random.default_rng(1))
    assert m.flops("sample", 8) == pytest.approx(2 * m.n_flop_params * m._tokens_per_sample * 8)


def test_sampling_with_and_without_cache_gives_the_same_tokens(tiny):
    m = HFModel(str(tiny), block_size=48, device="cpu")
    m.max_new_tokens = 24
    cached = m.sample_tokens(16, np.random.default_rng(3), use_cache=True)
    uncached = m.sample_tokens(16, np.random.default_rng(3), use_cache=False)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, m.sample_tokens(16, np.random.default_rng(4)))
    rows = m.sample(16, np.random.default_rng(3))
    assert rows.shape == (16, 48) and rows.dtype == np.int64 and 0 <= rows.min() and rows.max() < 256


def test_first_tokens_follow_the_model_distribution(tiny):
    """Gumbel-max through ``generate`` draws from softmax(logits): the first sampled token's
    frequencies match the model's probabilities within 4 binomial standard errors."""
    m = HFModel(str(tiny), block_size=48, device="cpu")
    m.max_new_tokens = 1
    n = 3000
    first = m.sample_tokens(n, np.random.default_rng(0))[:, 0].numpy()
    with torch.no_grad():
        logits = m.net(input_ids=torch.tensor([[m.bos_id]])).logits[0, -1]
    probs = torch.softmax(logits.double(), -1).numpy()
    freq = np.bincount(first, minlength=len(probs)) / n
    top = np.argsort(probs)[-10:]
    se = np.sqrt(probs[top] * (1 - probs[top]) / n)
    assert (np.abs(freq[top] - probs[top]) < 4 * se).all()


def _config(tiny: Path, **over):
    return load_config({"model": {"family": "hf", "path": str(tiny), "train": {"steps": 3}},
                        "data": {"block_size": 48, "test_size": 32},
                        "recursion": {"generations": 2, "samples_per_generation": 24}}, over)


def test_init_base_reloads_the_pretrained_weights_each_generation(tiny):
    config = _config(tiny)
    assert config.recursion.init == "base" and config.data.source == "text"
    chain = Chain(config, seed=0)
    pretrained = {k: v.clone() for k, v in chain.model.net.state_dict().items()}
    starts = []
    fit = chain.model.fit

    def spy(data, rng):
        starts.append({k: v.clone() for k, v in chain.model.net.state_dict().items()})
        fit(data, rng)

    chain.model.fit = spy
    while not chain.done:
        chain.step()
    assert len(starts) == 3  # generations 0, 1 and 2 all start from the checkpoint
    for weights in starts:
        assert all(torch.equal(weights[k], pretrained[k]) for k in pretrained)
    # ...and after fitting they moved away from the checkpoint.
    after = chain.model.net.state_dict()
    assert not all(torch.equal(after[k], pretrained[k]) for k in pretrained)
    # 'warm' starts from the previous generation instead.
    warm = Chain(_config(tiny, **{"recursion.init": "warm"}), seed=0)
    warm.step()
    w1 = {k: v.clone() for k, v in warm.model.net.state_dict().items()}
    starts.clear()
    fit2 = warm.model.fit

    def spy2(data, rng):
        starts.append({k: v.clone() for k, v in warm.model.net.state_dict().items()})
        fit2(data, rng)

    warm.model.fit = spy2
    warm.step()
    assert all(torch.equal(starts[0][k], w1[k]) for k in w1)


def test_hf_judge_over_a_gpt_generator(tiny):
    config = load_config({
        "model": {"family": "gpt", "size": "xs", "train": {"epochs": 1}},
        "data": {"source": "text", "block_size": 48, "test_size": 32},
        "recursion": {"generations": 1, "samples_per_generation": 40},
        "curation": {"scorer": "judge", "strength": 0.5,
                     "judge_families": [{"family": "hf", "path": str(tiny), "train": {"steps": 2}}]}})
    chain = Chain(config, seed=0)
    chain.step()
    assert [type(j).__name__ for j in chain.judges] == ["GPTModel", "HFModel"]
    row = chain.step()
    assert row["candidates"] == 80 and row["score_flops"] > 0


def test_bad_path_is_a_config_error(tmp_path):
    config = load_config({"model": {"family": "hf", "path": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="model.path: cannot load"):
        Chain(config)
    with pytest.raises(ConfigError, match="data.source: 'truth-lm' does not feed model.family 'hf'"):
        load_config({"model": {"family": "hf", "path": "x"}, "data": {"source": "truth-lm"}})


def test_cli_chain_on_the_tiny_model(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["chain", "--set", "model.family=hf", "--set", f"model.path={tiny}",
                 "--set", "model.train.steps=2", "--set", "data.block_size=48",
                 "--set", "data.test_size=32", "--set", "recursion.generations=1",
                 "--set", "recursion.samples_per_generation=16", "--out", "hf-run"])
    assert code == 0
    df = pd.read_parquet("hf-run/generations.parquet")
    assert len(df) == 2 and np.isfinite(df["real_nll"]).all() and (df["flops"] > 0).all()


@pytest.mark.slow
def test_two_trial_sweep_on_the_tiny_model(tiny, ray_session, tmp_path):
    from sweep.search.driver import run_sweep

    config = _config(tiny, **{"name": "hf-sweep", "recursion.generations": 1,
                              "search": {"sampler": "grid", "trials": 2, "check": False, "space": {
                                  "recursion.regime": {"choice": ["replace", "accumulate"]}}}})
    run_dir = run_sweep(config, storage=str(tmp_path), progress=False)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
    assert set(df["param.recursion.regime"]) == {"replace", "accumulate"}
