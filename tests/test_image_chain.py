"""vae / diffusion chains on the digits: config, CLI, metrics in the rows, TensorBoard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sweep.cli import main
from sweep.config import ConfigError, load_config
from sweep.engine.chain import Chain

TINY = {"recursion.generations": 2, "recursion.samples_per_generation": 120,
        "data.eval_samples": 200, "data.test_size": 200}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: two threads only spin-wait on a loaded machine
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family,extra", [
    ("vae", {"model.train.steps": 40}),
    ("diffusion", {"model.train.steps": 40, "model.timesteps": 50, "model.sample_steps": 10,
                   "model.elbo_steps": 10}),
])
def test_chain_rows_hold_image_metrics_and_flops(family, extra):
    config = load_config({"model": {"family": family}}, {**TINY, **extra})
    assert config.data.source == "images" and config.data.path == "builtin:digits"
    chain = Chain(config, seed=0)
    while not chain.done:
        chain.step()
    df = chain.frame()
    assert len(df) == 3
    for key in ("fd", "precision", "recall", "diversity", "minority_share", "class_tv"):
        assert df[key].notna().all() and (df[f"{key}_se"] >= 0).all()
    assert (df["minority_truth"] - 0.05).abs().max() < 0.01
    assert np.isfinite(df["real_nll"]).all() and np.isfinite(df["tail_nll"]).all()
    assert (df["flops"] > 0).all() and (df.loc[1:, "sample_flops"] > 0).all()
    if family == "diffusion":
        assert (df["denoise_loss"] > 0).all()
        # Sampling cost counts the respaced steps: 2 x passes x MACs per image.
        n_syn = config.recursion.samples_per_generation
        assert df.loc[1, "sample_flops"] == pytest.approx(2 * chain.model.macs * 10 * n_syn)


def test_init_base_reloads_model_zero_each_generation():
    config = load_config({"model": {"family": "vae"}},
                         {**TINY, "model.train.steps": 5, "recursion.init": "base"})
    chain = Chain(config, seed=0)
    chain.step()
    w0 = {k: v.clone() for k, v in chain.model.net.state_dict().items()}
    seen = []
    original_fit = chain.model.fit

    def fit(data, rng):  # the weights a generation starts from
        seen.append({k: v.clone() for k, v in chain.model.net.state_dict().items()})
        original_fit(data, rng)

    chain.model.fit = fit
    chain.step()
    chain.step()
    assert len(seen) == 2
    for start in seen:
        assert all(torch.equal(start[k], w0[k]) for k in w0)


@pytest.mark.parametrize("overrides,message", [
    ({"model.family": "vae", "data.source": "truth"}, "data.source: 'truth' does not feed model.family 'vae'"),
    ({"model.family": "gaussian", "collapse.metric": "fd"}, "collapse.metric: 'fd' needs data.source images"),
    ({"model.family": "vae", "collapse.metric": "denoise_loss"}, "needs model.family diffusion"),
    ({"model.family": "diffusion", "model.sample_steps": 500}, "model.sample_steps: 500 is more than"),
])
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config({}, overrides)


def test_cli_chain_from_a_relative_config_writes_metrics_and_image_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vae.yaml").write_text(
        "name: tiny-vae\nmodel: {family: vae, size: xs, train: {steps: 30}}\n"
        "recursion: {generations: 1, samples_per_generation: 100}\n"
        "data: {eval_samples: 100, test_size: 100}\ncollapse: {metric: fd}\n")
    assert main(["chain", "vae.yaml", "--tb"]) == 0
    out = capsys.readouterr().out
    assert "fd" in out and "collapsed" in out
    df = pd.read_parquet("runs/tiny-vae/generations.parquet")
    assert {"fd", "fd_se", "precision", "minority_share"} <= set(df.columns)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator("runs/tiny-vae/tb", size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "samples/images" in acc.Tags()["images"]
    assert {"quality/fd", "quality/fd_se", "tail/minority_share"} <= set(acc.Tags()["scalars"])


def test_cli_bad_image_path_is_one_line(tmp_path, capsys):
    code = main(["chain", "--set", "model.family=vae", "--set", "data.path=/no/such/dir",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "data.path: image path not found" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["vae-digits.yaml", "diffusion-digits.yaml", "hf-tiny.yaml",
                                  "cluster-images.yaml", "cluster-hf.yaml"])
def test_shipped_configs_validate(name):
    from pathlib import Path

    from sweep.search.space import validate_search

    config = load_config(Path(__file__).parent.parent / "configs" / name)
    validate_search(config)
