"""What researchers touch first: analyze speed, help text, tables on narrow or piped output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_analysis import make_run  # tests/ is on sys.path (no package)

ROOT = Path(__file__).resolve().parents[1]


def test_analyze_caches_importance_and_skips_sklearn_when_current(tmp_path):
    run = make_run(tmp_path)
    code = ("import sys; from sweep.analysis.core import analyze; analyze(sys.argv[1]); "
            "print('sklearn' in sys.modules, 'ray' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    cache = json.loads((run / "importance.json").read_text())
    assert set(cache["importance"]) == {"quality_gap", "total_flops"}
    second = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                            text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    assert first == ["True", "False"] and second == ["False", "False"]
    # the cached and the computed tables are the same numbers
    summary = json.loads((run / "analysis.json").read_text())
    assert summary["importance"] == cache["importance"]
    # a changed result invalidates the cache
    import pandas as pd

    df = pd.read_parquet(run / "results.parquet")
    df.loc[0, "quality_gap"] += 1.0
    df.to_parquet(run / "results.parquet")
    third = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()[-2:]
    assert third[0] == "True"


def test_every_subcommand_and_option_has_help():
    import argparse

    from sweep.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        assert helps.get(name), f"{name}: no one-line help in `collapse-sweep --help`"
        assert p.description and len(p.description) > 40, f"{name}: no description"
        for action in p._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest}: no help"


def test_theory_reference_ships_with_the_package():
    import sweep.theory

    ref = Path(sweep.theory.__file__).parent / "REFERENCES.md"
    assert "Gerstgrasser" in ref.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"theory/REFERENCES.md"' in pyproject
    out = subprocess.run([sys.executable, "-m", "sweep", "theory", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert "sweep/theory/REFERENCES.md" in " ".join(out.split())
    assert not (ROOT / "notes" / "HELPERS.md").exists()


def _wide_table():
    from rich.table import Table

    names = ["generation", "train_size", "real_nll", "tail_nll", "minority_share",
             "distinct_2", "scorer_agreement", "cumulative_flops"]
    table = Table(title="chain")
    for n in names:
        table.add_column(n, justify="right")
    for g in range(3):
        table.add_row(str(g), *[f"{1.2345678e10 * (g + 1):.4e}"] * (len(names) - 1))
    return names, table


def test_tables_never_cut_column_names_piped_or_narrow():
    import io

    from rich.console import Console

    from sweep.analysis.format import print_table

    for terminal in (False, True):
        names, table = _wide_table()
        buf = io.StringIO()
        print_table(Console(file=buf, width=60, force_terminal=terminal, color_system=None),
                    table)
        text = buf.getvalue()
        assert "…" not in text
        for n in names:
            assert n in text, (terminal, n)
        assert "2.4691e+10" in text  # cells whole too
        lines = text.splitlines()
        if terminal:  # groups that fit, each repeating the generation column
            assert max(len(line) for line in lines) <= 60
            assert sum("generation" in line for line in lines) >= 2
        else:  # one wide table: a file or a pager has no width
            assert sum("generation" in line for line in lines) == 1


def test_chain_table_piped_keeps_column_names(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sweep", "chain", "--set", "recursion.generations=3",
         "--set", "model.family=categorical", "--out", str(tmp_path / "c")],
        capture_output=True, text=True, check=True, cwd=ROOT, env={
            **__import__("os").environ, "COLUMNS": "50"}).stdout
    assert "…" not in out and "generation" in out and "cumulative_flops" in out
