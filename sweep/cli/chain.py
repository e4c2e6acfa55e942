"""``collapse-sweep chain``: one chain from the terminal, resumable, with a table at the end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sweep.analysis.format import print_table
from sweep.config import ChainConfig, ConfigError, dump_config
from sweep.engine.chain import Chain, drive
from sweep.files.atomic import write_parquet, write_text
from sweep.files.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint

#: The checkpoint and generations.parquet are rewritten at most this often (and at the end):
#: both hold the whole chain, so rewriting them every generation made long analytic chains
#: (3000 generations of milliseconds each) spend minutes on I/O.
SAVE_EVERY_S = 2.0
TABLE_COLUMNS = ("generation", "train_size", "excess", "real_nll", "tail_nll", "minority_nll",
                 "var", "mean", "param_error", "gini", "support", "minority_share",
                 "minority_share_truth", "distinct_2", "distinct_2_real", "fd", "precision",
                 "recall", "label_cost", "scorer_agreement", "cumulative_flops")


def build_chain(config: ChainConfig, seed: int | None) -> Chain:
    """Build the chain, turning a bad data source into a one-line config error."""
    try:
        return Chain(config, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc)
        raise ConfigError(msg if ":" in msg.split(" ")[0] else f"data: {msg}") from None


def print_health(report, console: Console) -> None:
    """One loud line: green when the measurement resolves the tolerance, red when not."""
    if report.passed:
        console.print(f"[green]health check passed[/green]: {report.reason}")
    else:
        console.print(f"[bold red]WARNING: health check failed[/bold red]: {report.reason}")


def run_check_command(config: ChainConfig, *, seeds: int, json_out: Path | None = None,
                      console: Console | None = None) -> int:
    from sweep.engine.health import health_check

    console = console or Console()
    build_chain(config, None)  # a bad data source is a config error, before any fit
    report = health_check(config, seeds=[config.seed + i for i in range(seeds)],
                          progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    print_health(report, console)
    longer = (f", {np.mean(report.model0_longer):.4g} with 2x the budget"
              if report.model0_longer else "")
    console.print(f"{report.metric} of model 0: {np.mean(report.model0):.4g}{longer}; "
                  f"control gaps: {', '.join(f'{g:+.3g}' for g in report.control_gaps)} "
                  f"(tolerance {report.tolerance:g})")
    if json_out is not None:
        write_text(json_out, json.dumps(report.to_dict(), indent=2))
        console.print(f"wrote {json_out}")
    return 0 if report.passed else 1


def run_chain_command(config: ChainConfig, *, out: Path | None, seed: int | None,
                      tensorboard: bool, fresh: bool, check: bool = False,
                      console: Console | None = None) -> int:
    console = console or Console()
    chain = build_chain(config, seed)  # validates the data before anything is written
    if check:
        from sweep.engine.health import health_check

        print_health(health_check(config, progress=lambda m: console.print(f"[dim]{m}[/dim]")),
                     console)
    out = out or Path("runs") / config.name
    ckpt_dir = out / "checkpoint"
    try:
        state = None if fresh else load_checkpoint(ckpt_dir)
    except CorruptCheckpoint as exc:
        console.print(f"warning: {escape(str(exc))}: the chain starts from generation 0")
        state = None
    if state is not None:
        try:
            chain.load_state_dict(state)
        except ValueError:
            raise ConfigError(f"--out: {out} holds a checkpoint of another config or seed; "
                              "pass --fresh to start over there, or choose another --out") from None
        console.print(f"resuming from generation {chain.generation} ({escape(str(ckpt_dir))})")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", dump_config(config))
    logger = None
    if tensorboard:
        from sweep.observe.board import ChainLogger

        logger = ChainLogger(out / "tb", config=config, params={})
    total = config.recursion.generations + 1
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("gen {task.completed}/{task.total}"), TextColumn("{task.fields[nll]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(config.name, total=total, completed=chain.generation, nll="")
        saved = {"at": time.perf_counter(), "generation": chain.generation}

        def after_step(chain: Chain, row: dict[str, Any]) -> None:
            if time.perf_counter() - saved["at"] >= SAVE_EVERY_S:
                _save(chain, out, ckpt_dir)
                saved.update(at=time.perf_counter(), generation=chain.generation)
            bar.update(task, completed=chain.generation, nll=f"real_nll {row['real_nll']:.4g}")

        try:
            drive(chain, on_generation=logger.log_generation if logger else None,
                  after_step=after_step)
        finally:  # the end, an error or Ctrl-C: what was computed is kept
            if chain.generation != saved["generation"] or not (out / "generations.parquet").is_file():
                _save(chain, out, ckpt_dir)
    summary = chain.summary()
    if logger:
        logger.close(summary)
    print_table(console, generation_table(
        chain.frame(), title=f"{config.name}: {config.model.family}, {config.recursion.regime}, "
                             f"n={config.recursion.samples_per_generation}"))
    verdict = "[red]collapsed[/red]" if summary["collapsed"] else "[green]does not collapse[/green]"
    console.print(f"{verdict}: {config.collapse.metric} gap {summary['quality_gap']:+.3g} "
                  f"(tolerance {config.collapse.tolerance:g}, {config.collapse.at}), "
                  f"total {summary['total_flops']:.3g} FLOPs, status {summary['status']}")
    if summary["quality_gap"] < -config.collapse.tolerance:
        console.print(f"[bold red]WARNING[/bold red]: later generations beat model 0 by more than "
                      f"the tolerance (gap {summary['quality_gap']:+.3g}): model 0 is probably "
                      "not trained to convergence, so this gap understates collapse; run "
                      "`collapse-sweep check` on this config")
    console.print(f"wrote {escape(str(out / 'generations.parquet'))}")
    if logger:
        console.print(f"tensorboard: tensorboard --logdir {escape(str(out / 'tb'))} --host 127.0.0.1")
    return 0


def _save(chain: Chain, out: Path, ckpt_dir: Path) -> None:
    save_checkpoint(ckpt_dir, chain.state_dict())
    write_parquet(chain.frame().assign(seed=chain.seed), out / "generations.parquet")


def generation_table(df: pd.DataFrame, *, title: str, max_rows: int = 25) -> Table:
    """The per-generation table; long chains show evenly spaced generations and the last."""
    cols = [c for c in TABLE_COLUMNS if c in df.columns and df[c].notna().any()]
    if "param_error" in cols and "excess" in cols and df.excess.equals(df.param_error):
        cols.remove("excess")  # linreg: the excess loss is the parameter error
    table = Table(title=escape(title))
    for c in cols:
        table.add_column(c, justify="right")
    step = max(1, math.ceil(len(df) / max_rows))
    shown = sorted(set(range(0, len(df), step)) | {len(df) - 1})
    for i in shown:
        row = df.iloc[i]
        table.add_row(*[_fmt(row[c]) for c in cols])
    return table


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3e}" if abs(v) >= 1e5 else f"{v:.4g}"
    return str(v)
