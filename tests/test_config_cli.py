"""Config validation and the chain/theory CLI: one-line errors, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from sweep import ConfigError, load_config
from sweep.cli.main import main

BAD = [
    (["--set", "bogus=1"], "bogus: unknown field (allowed: name, seed, model"),
    (["--set", "recursion.regim=accumulate"], "recursion.regim: unknown field (allowed: generations"),
    (["--set", "recursion.generations=ten"], "recursion.generations: input should be a valid integer"),
    (["--set", "recursion.real_fraction=1.5"], "recursion.real_fraction: input should be less than or equal to 1"),
    (["--set", "curation.strength=1"], "curation.strength: input should be less than 1"),
    (["--set", "recursion.generations=-1"], "recursion.generations: input should be greater than or equal to 0"),
    (["--set", "model.family=flow"], "model.family: unknown value 'flow' (allowed: 'gaussian', 'linreg'"),
    (["--set", "recursion.regime=keep"], "recursion.regime: got 'keep' (allowed: 'replace', 'accumulate'"),
    (["/no/such/config.yaml"], "config: file not found: /no/such/config.yaml"),
    (["--set", "curation.scorer=rules"], "curation.scorer: 'rules' scores text"),
    (["--set", "sampling.top_k=5"], "sampling.top_k: only language models"),
    (["--set", "sampling.prompt_tokens=2"], "sampling.prompt_tokens: only language models"),
    (["--set", "model.family=gpt", "--set", "sampling.prompt_tokens=24"],
     "sampling.prompt_tokens: 24 leaves nothing to generate in rows of 24 tokens"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code = main(["chain", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not out.exists()


def test_bad_yaml_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recursion: [1, 2\n")
    assert main(["chain", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_console_script_has_no_traceback_on_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sweep", "chain", "--set", "model.family=flow",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "collapse-sweep: error: model.family: unknown value 'flow' (allowed: 'gaussian', "
        "'linreg', 'categorical', 'gmm', 'gpt', 'hf', 'vae', 'diffusion'; or a "
        "'package.module:NAME' path)"]


def test_chain_command_writes_generations_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["chain", "--set", "recursion.generations=5", "--set", "model.family=linreg", "--out", str(out)]
    assert main(args) == 0
    df = pd.read_parquet(out / "generations.parquet")
    assert list(df.generation) == list(range(6)) and "param_error" in df
    assert (out / "config.yaml").is_file()
    text = capsys.readouterr().out
    assert "param_error" in text and "FLOPs" in text
    # Running again finds the finished checkpoint and does no new work: same frame.
    assert main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "generations.parquet"), df)


def test_overrides_parse_yaml_values():
    c = load_config(None, ["recursion.real_fraction=0.25", "curation.scorer=self",
                           "model.family=categorical", "model.outcomes=20"])
    assert c.recursion.real_fraction == 0.25 and c.model.outcomes == 20
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["recursion.generations"])


def test_defaults_reproduce_references():
    c = load_config({})
    assert (c.model.family, c.model.dim, c.model.estimator) == ("gaussian", 1, "mle")
    assert c.recursion.samples_per_generation == 100
    lin = load_config({"model": {"family": "linreg"}})
    assert (lin.model.dim, lin.model.noise_var, lin.model.design_rows) == (10, 1.0, None)
    cat = load_config({"model": {"family": "categorical"}})
    assert (cat.model.outcomes, cat.model.truth) == (10, "uniform")


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in ("chain", "run", "resume", "analyze", "report", "theory", "examples"):
        assert word in text


def test_chain_into_a_dir_of_another_config_needs_fresh(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["chain", "--set", "recursion.generations=2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["chain", "--set", "recursion.generations=3", "--out", str(out)]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert main(["chain", "--set", "recursion.generations=3", "--out", str(out), "--fresh"]) == 0
