"""The generation loop: one chain of recursive training, without Ray.

Generation 0 is fit on real data; model g >= 1 is fit on the training set built from model
g-1's (curated) samples, mixed with real data as the regime says. Every random stream is
derived from the config seed:

    SeedSequence(seed) -> data (truth, D_0, test) | model 0 | chain (sampling, mixing, fits)
                          | evaluation samples | judges

so a shared generation 0 (sweeps) or a resume from a checkpoint gives the same frame.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from models.base import Model, TokenModel
from sweep.config import ChainConfig, load_config
from sweep.engine.allocator import keep_freed_memory
from sweep.engine.curation import (
    ScoreContext,
    candidates_needed,
    get_scorer,
    per_item,
    scorer_agreement,
    scorer_cost_model,
    select,
    select_per_prompt,
)
from sweep.engine.flops import generation_flops
from sweep.engine.metrics import DIRECTION, collapse_summary, group_nll, nll_metrics, relative_gaps
from sweep.engine.regimes import Pool, Regime, real_part, split_batch
from sweep.files.checkpoint import CorruptCheckpoint, load_checkpoint, save_checkpoint
from sweep.problems import (
    Problem,
    build_model,
    build_problem,
    excess_loss,
    family_of,
    source_of,
)

GenerationCallback = Callable[[dict[str, Any], dict[str, Any]], None]

#: A chain's ``status``: running, then finished | stopped_collapsed (both a usable result:
#: the chain ran to its end, or stopped early once it had clearly collapsed) | diverged.
OK_STATUSES = ("finished", "stopped_collapsed")


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    names = ("data", "model0", "chain", "eval", "judges")
    return dict(zip(names, np.random.SeedSequence(seed).spawn(len(names)), strict=True))


class Chain:
    """A resumable chain: call ``step()`` once per generation until ``done``."""

    def __init__(self, config: ChainConfig, *, seed: int | None = None,
                 problem: Problem | None = None, model0_state: dict[str, Any] | None = None
                 ) -> None:
        keep_freed_memory()  # once per process: no page faults on every generation's arrays
        self.config = config
        self.family = family_of(config)
        self.source = source_of(config)
        self.seed = config.seed if seed is None else seed
        self.streams = seed_streams(self.seed)
        self.problem = problem or build_problem(config, np.random.default_rng(self.streams["data"]))
        self.rng = np.random.default_rng(self.streams["chain"])
        self.model = build_model(config, self.problem, np.random.default_rng(self.streams["model0"]))
        self.shared_model0 = model0_state
        self.model0_state: dict[str, Any] | None = None
        self.judges: list[Model] = []
        self.pool = Pool(self.problem.real_train)
        self.regime = Regime(config.recursion.regime, config.recursion.samples_per_generation)
        self.generation = 0
        self.rows: list[dict[str, Any]] = []
        self.status = "running"
        self._test_sizes = self.model.item_size(self.problem.test)  # None: one unit per item
        # in every checkpoint (a checkpoint of another config is refused); the config is not
        # changed while the chain runs, and hashing its dump cost 0.2 ms a generation
        self.fingerprint = config.fingerprint()

    @property
    def done(self) -> bool:
        return self.status != "running" or self.generation > self.config.recursion.generations

    # ------------------------------------------------------------------ one generation
    def step(self, on_generation: GenerationCallback | None = None) -> dict[str, Any]:
        if self.done:
            raise RuntimeError("chain is finished")
        g = self.generation
        row: dict[str, Any] = {"generation": g}
        if g == 0:
            train, flops = self._fit_model0()
        else:
            train, flops, extra = self._next_generation()
            row.update(extra)
        row["train_size"] = len(train)
        details = self._evaluate(row)
        row.update(flops)
        row["cumulative_flops"] = flops["flops"] + (self.rows[-1]["cumulative_flops"] if self.rows else 0.0)
        self.rows.append(row)
        self.generation += 1
        self._update_status(row)
        if on_generation is not None:
            on_generation(row, details)
        return row

    def _fit_model0(self) -> tuple[np.ndarray, dict[str, float]]:
        train = self.problem.real_train
        if self.shared_model0 is not None:
            self.model.load_state_dict(self.shared_model0)
        else:
            self.model.fit(train, np.random.default_rng(self.streams["model0"]))
        self.model0_state = _copy_state(self.model.state_dict())
        judge_fit = self._build_judges() if self.config.curation.scorer == "judge" else 0.0
        return train, generation_flops(model=self.model, train_size=len(train), extra_fit=judge_fit)

    def _build_judges(self) -> float:
        """Model 0, k - 1 models of its family, and one model per ``judge_families`` entry,
        the others fit independently on fresh real data; returns their fit cost."""
        rng = np.random.default_rng(self.streams["judges"])
        judge0 = build_model(self.config, self.problem, rng)
        judge0.load_state_dict(self.model0_state)
        self.judges, cost = [judge0], 0.0
        n = self.config.recursion.samples_per_generation
        for config in self._judge_configs()[1:]:
            judge = build_model(config, self.problem, rng)
            data = self.problem.draw_real(n, rng)
            judge.fit(data, rng)
            cost += judge.flops("fit", len(data))
            self.judges.append(judge)
        return cost

    def _judge_configs(self) -> list[ChainConfig]:
        """The config each judge is built from, in ensemble order (model 0's family first)."""
        cur = self.config.curation
        dump = self.config.model_dump(mode="json")
        others = [ChainConfig.model_validate({**dump, "model": spec, "curation": {}})
                  for spec in cur.judge_families]
        return [self.config] * cur.judge_models + others

    def _next_generation(self) -> tuple[np.ndarray, dict[str, float], dict[str, Any]]:
        """Generation g >= 1, as its steps (each draws from ``self.rng`` in this order)."""
        rec = self.config.recursion
        n_real, n_syn = split_batch(rec.samples_per_generation, rec.real_fraction)
        sampler = self.model  # model g-1 produces generation g's synthetic data
        real = self._draw_real(n_real)
        candidates, per_prompt = self._candidates(sampler, n_syn)
        synthetic, scorers, extra = self._curate(sampler, candidates, per_prompt, n_syn)
        batch = np.concatenate([real, synthetic.astype(real.dtype, copy=False)])  # mix
        train = self.regime.next_training_set(self.pool, batch, self.rng)
        self._fit(train)
        # The sampler is the same object as the model (model g-1 before the fit); sampling
        # and scoring costs depend on its size only, so they are counted after the fit.
        flops = generation_flops(model=self.model, train_size=len(train), sampler=sampler,
                                 candidates=len(candidates), scorers=scorers)
        return train, flops, extra

    def _draw_real(self, n_real: int) -> np.ndarray:
        """The batch's real examples: re-drawn from D_0 (fixed) or new ones (fresh)."""
        rec = self.config.recursion
        return real_part(n_real, real_train=self.problem.real_train, source=rec.real_source,
                         draw_real=self.problem.draw_real, rng=self.rng)

    def _curate(self, sampler: Model, candidates: np.ndarray, per_prompt: int, n_syn: int
                ) -> tuple[np.ndarray, list[Any], dict[str, Any]]:
        """Keep ``n_syn`` candidates by the scorer (one per prompt when prompted); returns them,
        the models the scoring cost, and the row's curation columns."""
        cur = self.config.curation
        extra: dict[str, Any] = {"candidates": len(candidates), "scorer_agreement": float("nan")}
        if cur.scorer == "none" or len(candidates) <= n_syn:
            kept = candidates[::per_prompt] if per_prompt else candidates[:n_syn]
            return kept, [], extra
        ctx = ScoreContext(model=sampler, judges=self.judges, truth=self.problem.truth,
                           config=self.config, rng=self.rng)
        scores = get_scorer(cur.scorer)(candidates, ctx)
        if cur.scorer == "human":
            scores = self._label(scores, extra)
        labelled = np.isfinite(scores)  # a human's budget can leave some unlabelled
        if self.problem.truth is not None and labelled.sum() >= 3:
            extra["scorer_agreement"] = scorer_agreement(
                scores[labelled], per_item(self.problem.truth, candidates[labelled]))
        if per_prompt:
            keep = select_per_prompt(scores, per_prompt, how=cur.selection,
                                     temperature=cur.selection_temperature, rng=self.rng)
        else:
            keep = select(scores, n_syn, how=cur.selection,
                          temperature=cur.selection_temperature, rng=self.rng)
        return candidates[keep], scorer_cost_model(cur.scorer, ctx), extra

    def _fit(self, train: np.ndarray) -> None:
        """Model g: initialised as ``recursion.init`` says, then fit on D_g."""
        self._reinit()
        self.model.fit(train, self.rng)

    def _label(self, scores: np.ndarray, extra: dict[str, Any]) -> np.ndarray:
        """Charge the labeller: one label per candidate while ``label_budget`` lasts; the
        candidates left unlabelled rank last (kept, at random, only to fill the slots)."""
        cur = self.config.curation
        used = sum(int(r.get("labels", 0)) for r in self.rows)
        labels = len(scores) if cur.label_budget is None else max(0, min(len(scores), cur.label_budget - used))
        scores = np.asarray(scores, dtype=float).copy()
        scores[labels:] = -np.inf
        extra["labels"] = labels
        extra["label_cost"] = labels * cur.label_cost
        return scores

    def _candidates(self, sampler: Model, n_syn: int) -> tuple[np.ndarray, int]:
        """The synthetic candidates and, when they continue real prompts, how many per prompt
        (consecutive rows share a prompt; 0 = unprompted, select among all of them)."""
        cur, k = self.config.curation, self.config.sampling.prompt_tokens
        if not n_syn:
            return self.problem.real_train[:0], 0
        if not k:
            return sampler.sample(candidates_needed(n_syn, cur.strength), self.rng), 0
        per_prompt = candidates_needed(1, cur.strength)
        prompts = real_part(n_syn, real_train=self.problem.real_train,
                            source=self.config.recursion.real_source,
                            draw_real=self.problem.draw_real, rng=self.rng)[:, :k]
        # Only token families continue prompts (the config refuses prompt_tokens otherwise).
        lm = cast(TokenModel, sampler)
        return lm.sample(n_syn * per_prompt, self.rng,
                         prompt=np.repeat(prompts, per_prompt, axis=0)), per_prompt

    def _reinit(self) -> None:
        init = self.config.recursion.init
        if init == "base" and self.family.reload_base is not None:
            self.family.reload_base(self.model)
        elif init == "base" and self.model0_state is not None:
            self.model.load_state_dict(_copy_state(self.model0_state))
        elif init == "scratch":
            self.model.reset(self.rng)  # closed-form families have nothing to reset
        # 'warm' keeps the weights.

    def _evaluate(self, row: dict[str, Any]) -> dict[str, Any]:
        pb = self.problem
        lp = self.model.log_prob(pb.test)
        # A per-token tail (truth-lm) needs the per-token log-probabilities too.
        token_lp = self.model.token_log_prob(pb.test) if pb.tail_mask.ndim == 2 else None
        row.update(nll_metrics(lp, self._test_sizes, pb.tail_mask,
                               pb.truth_test_log_prob if self.source.kl else None,
                               token_log_prob=token_lp))
        excess = excess_loss(self.family, self.model, pb, lp, self._test_sizes)
        if excess is not None:
            row["excess"] = excess
        if pb.truth_test_log_prob is not None:
            sizes = np.ones(len(lp)) if self._test_sizes is None else self._test_sizes
            for name, group in pb.test_groups.items():
                row.update(group_nll(lp, sizes, group, pb.truth_test_log_prob, name=name))
        row.update(self.family.stats(self.model, self.problem))
        details: dict[str, Any] = {"test_log_prob": lp, "model": self.model}
        if self.family.sample_metrics is not None:
            eval_rng = np.random.default_rng([self.seed, self.generation, 7])
            metrics, samples = self.family.sample_metrics(self.model, self.problem, eval_rng)
            row.update(metrics)
            details["samples"] = samples
        return details

    def _update_status(self, row: dict[str, Any]) -> None:
        if not np.isfinite(row["real_nll"]):
            self.status = "diverged"
            return
        col = self.config.collapse
        if col.stop_early and len(self.rows) > 1:
            values = np.array([r.get(col.metric, np.nan) for r in self.rows], dtype=float)
            if relative_gaps(values, col.metric)[-1] > col.stop_factor * col.tolerance:
                self.status = "stopped_collapsed"
                return
        if self.generation > self.config.recursion.generations:
            self.status = "finished"

    # ------------------------------------------------------------------ results
    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        df.attrs["summary"] = self.summary()
        return df

    def summary(self) -> dict[str, Any]:
        out = collapse_summary(self.rows, self.config.collapse)
        last = self.rows[-1] if self.rows else {}
        out.update({
            "status": self.status,
            "generations_run": len(self.rows) - 1,
            "total_flops": float(last.get("cumulative_flops", 0.0)),
            "total_label_cost": float(sum(r.get("label_cost", 0.0) for r in self.rows)),
            "final_real_nll": float(last.get("real_nll", np.nan)),
            "collapse_metric": self.config.collapse.metric,
            "collapse_direction": DIRECTION.get(self.config.collapse.metric, 1),
        })
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "status": self.status,
            "rows": self.rows,
            "rng": self.rng.bit_generator.state,
            "pool": self.pool.state_dict(),
            "model": self.model.state_dict(),
            "model0": self.model0_state,
            "judges": [j.state_dict() for j in self.judges],
            "fingerprint": self.fingerprint,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self.fingerprint or state.get("seed") != self.seed:
            raise ValueError("checkpoint: it belongs to a different config or seed")
        self.generation = int(state["generation"])
        self.status = state["status"]
        self.rows = list(state["rows"])
        self.rng.bit_generator.state = state["rng"]
        self.pool = Pool.from_state(state["pool"])
        self.model.load_state_dict(state["model"])
        self.model0_state = state["model0"]
        self.judges = []
        for config, judge_state in zip(self._judge_configs(), state["judges"], strict=False):
            judge = build_model(config, self.problem, np.random.default_rng(0))
            judge.load_state_dict(judge_state)
            self.judges.append(judge)


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        out[key] = value.clone() if hasattr(value, "clone") else (
            value.copy() if hasattr(value, "copy") else value)
    return out


AfterStep = Callable[[Chain, dict[str, Any]], None]
OnError = Callable[[Chain, Exception], None]


def drive(chain: Chain, *, on_generation: GenerationCallback | None = None,
          after_step: AfterStep | None = None, on_error: OnError | None = None) -> Chain:
    """Step ``chain`` to its end: the one generation loop (``run_chain``, ``run_chains``, the
    chain command and sweep trials all use it).

    ``on_generation(row, details)`` sees each generation as it is made (logging);
    ``after_step(chain, row)`` runs after it (checkpoints, progress, reports). With
    ``on_error``, an error of the chain's own step is handed to it and ends the loop (a
    failed trial); errors of the callbacks always propagate.
    """
    while not chain.done:
        try:
            row = chain.step(on_generation)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(chain, exc)
            break
        if after_step is not None:
            after_step(chain, row)
    return chain


def run_chain(config: ChainConfig | dict | str | Path, *, seed: int | None = None,
              on_generation: GenerationCallback | None = None,
              checkpoint_dir: str | Path | None = None) -> pd.DataFrame:
    """Run one chain; one row per generation 0..G. ``df.attrs['summary']`` has the verdict.

    With ``checkpoint_dir`` the chain saves itself after every generation and, when a
    checkpoint is already there, resumes from it (so a killed run loses one generation).
    """
    if not isinstance(config, ChainConfig):
        config = load_config(config)
    chain = Chain(config, seed=seed)
    try:
        state = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    except CorruptCheckpoint as exc:
        warnings.warn(f"{exc}: the chain starts from scratch", stacklevel=2)
        state = None
    if state is not None:
        chain.load_state_dict(state)
    save = None if checkpoint_dir is None else (
        lambda c, row: save_checkpoint(checkpoint_dir, c.state_dict()))
    return drive(chain, on_generation=on_generation, after_step=save).frame()


def _run_seeds(config: ChainConfig, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for s in seeds:
        chain = drive(Chain(config, seed=s))
        rows.extend({"seed": s, **row} for row in chain.rows)
    return rows


def run_chains(config: ChainConfig | dict | str | Path, seeds: Iterable[int], *,
               workers: int | None = None, executor: Executor | None = None) -> pd.DataFrame:
    """Many seeds of one config (column ``seed``), spread over the machine's cores.

    Pass an ``executor`` to reuse worker processes across calls (process start-up costs
    about a second per worker).
    """
    if not isinstance(config, ChainConfig):
        config = load_config(config)
    seeds = list(seeds)
    workers = min(workers or os.cpu_count() or 1, max(1, len(seeds) // 8))
    if executor is None and workers <= 1:
        rows = _run_seeds(config, seeds)
    else:
        n_parts = workers * 4 if executor is not None else workers
        chunks = [seeds[i::n_parts] for i in range(n_parts)]
        with contextlib.ExitStack() as stack:
            if executor is None:
                import multiprocessing as mp

                executor = stack.enter_context(
                    ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")))
            rows = [r for part in executor.map(_run_seeds, [config] * len(chunks), chunks) for r in part]
    df = pd.DataFrame(rows)
    return df.sort_values(["seed", "generation"], kind="stable").reset_index(drop=True)
