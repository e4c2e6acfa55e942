"""TensorBoard logging: one event stream per chain, one sweep-level board.

``ChainLogger`` is the ``on_generation`` callback of a chain: every numeric column of the
generation row becomes a scalar (step = generation) under a ``group/name`` tag, the held-out
log-likelihoods a histogram (tail erosion shows as its left tail moving), LM samples a text
block, and the trial's hyperparameters go to TensorBoard's HParams plugin in the same event
file, so the HParams dashboard of ``RUN_DIR`` compares the trials of a sweep::

    with ChainLogger(tdir / "tb", config=config, params=params) as logger:
        df = run_chain(config, on_generation=logger.log_generation)
        logger.close(df.attrs["summary"])

``SweepBoard`` writes ``RUN_DIR/tb``: the Pareto scatter (total FLOPs vs quality gap) and a
results table, step = number of finished trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import Model
from models.tokens import EOS
from sweep.engine.chain import OK_STATUSES
from sweep.engine.metrics import DIRECTION
from sweep.observe.events import EventFile
from sweep.observe.palette import (
    FALLBACK_COLOR,
    MARKER_AREA_ONE,
    TOLERANCE_STYLE,
    marker_areas,
    regime_color,
)
from sweep.observe.summaries import (
    histogram_summary,
    hparams_summaries,
    image_summary,
    scalar_summary,
    session_end_summary,
    text_summary,
)
from sweep.problems import family_of, size_columns, source_of

if TYPE_CHECKING:
    import pandas as pd

    from sweep.config import ChainConfig

#: Tag group of each known row column; family statistics not listed go to ``model/``,
#: anything else numeric to ``other/``.
TAG_GROUPS: dict[str, str] = {
    "real_nll": "quality", "kl": "quality", "sample_true_nll": "quality",
    "in_language_share": "quality", "param_error": "quality",
    "excess": "quality",
    "tail_nll": "tail", "minority_share": "tail", "minority_share_all": "tail",
    "minority_weight": "tail", "minority_nll": "tail", "minority_kl": "tail",
    "minority_share_se": "tail", "minority_share_truth": "tail", "minority_share_truth_se": "tail",
    "gini": "diversity", "support": "diversity", "entropy": "diversity", "var": "diversity",
    "distinct_1": "diversity", "distinct_2": "diversity", "distinct_3": "diversity",
    "distinct_4": "diversity", "unigram_entropy": "diversity", "repetition_rate": "diversity",
    "mean_length": "diversity", "eos_rate": "diversity",
    **{f"{k}_real": "diversity" for k in ("distinct_1", "distinct_2", "distinct_4",
                                          "unigram_entropy", "repetition_rate", "mean_length",
                                          "eos_rate")},
    "fit_flops": "compute", "sample_flops": "compute", "score_flops": "compute",
    "flops": "compute", "cumulative_flops": "compute",
    "train_size": "data",
    "candidates": "curation", "scorer_agreement": "curation",
    "labels": "curation", "label_cost": "compute",
    "fd": "quality", "precision": "quality", "denoise_loss": "quality",
    "recall": "diversity", "diversity": "diversity",
    "class_tv": "tail", "minority_truth": "tail",
}
#: Final metrics of a trial in the HParams dashboard (summary key -> scalar tag).
FINAL_METRICS: dict[str, str] = {
    "quality_gap": "final/quality_gap", "total_flops": "final/total_flops",
    "final_real_nll": "final/real_nll", "collapsed": "final/collapsed",
    "total_label_cost": "final/total_label_cost",
}
#: Config paths always shown as hyperparameters (the searched params are added to them).
KEY_CONFIG = ("model.family", "recursion.regime", "recursion.real_fraction",
              "curation.strength", "curation.scorer")
GAP_TAG = "quality/gap"
HIST_TAG = "tail/test_log_likelihood"
SAMPLES_TAG = "samples/text"
IMAGES_TAG = "samples/images"
IMAGES_SHOWN = 64
#: At most this many held-out log-likelihoods go into a histogram (an even stride over the
#: test set): TensorBoard shows ~30 buckets, ~130 values each on average (the lowest-density
#: decile, the tail, ~400 values); binning 1.5M values a generation cost more than a short
#: analytic generation itself, and 20,000 still ~0.3 ms of its ~1 ms of logging.
HIST_MAX_VALUES = 4096
#: Equal-width buckets of a histogram. TensorBoard shows ~30 buckets whatever it is given;
#: its own default ("tensorflow": ~1,500 exponential edges) cost 3.7 ms a generation here,
#: 64 buckets 0.55 ms (a 0.3-s analytic trial logs 11 generations).
HIST_BINS = 64
SAMPLES_SHOWN = 4


def tag_for(column: str, family_stats: frozenset[str] = frozenset()) -> str:
    """The TensorBoard tag of a row column, ``group/name``."""
    base = column.removesuffix("_se")  # a standard error sits beside its metric
    group = TAG_GROUPS.get(base) or ("model" if column in family_stats else "other")
    return f"{group}/{column}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _number(value: Any) -> float | None:
    """A finite-or-infinite float for numeric values, None for NaN and non-numbers."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        value = float(value)
        return None if math.isnan(value) else value
    return None


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return value.item() if hasattr(value, "item") else value
    return str(value)


def decode_samples(samples: np.ndarray, *, byte_level: bool, n: int = SAMPLES_SHOWN) -> str:
    """A markdown code block with the first ``n`` samples, each cut at its first EOS.

    Byte-level vocabularies (local text: id = byte value) decode to UTF-8, undecodable bytes
    as U+FFFD; other vocabularies print as space-separated token ids.
    """
    lines = []
    for row in np.asarray(samples)[:n]:
        row = np.asarray(row, dtype=np.int64)
        stop = np.flatnonzero(row == EOS)
        row = row[: stop[0]] if len(stop) else row
        if byte_level:
            text = bytes(row.clip(0, 255).astype(np.uint8)).decode("utf-8", errors="replace")
            # One sample per line; a fence inside the text must not end the block.
            lines.append(text.replace("\n", "\u21b5").replace("```", "`\u200b``"))
        else:
            lines.append(" ".join(map(str, row.tolist())))
    return "```\n" + "\n".join(lines) + "\n```"


def image_grid(images: np.ndarray, *, pad: int = 1) -> np.ndarray:
    """A square grid (H', W') of grey images (n, H, W), pixels clipped to [0, 1]."""
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(np.clip(images, 0.0, 1.0)):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top: top + h, left: left + w] = im
    return grid


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.4g}"
        return str(v).replace("|", "\\|")
    out = ["|" + "|".join(header) + "|", "|" + "|".join("-" * len(header)) + "|"]
    out += ["|" + "|".join(cell(v) for v in r) + "|" for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- one chain
class ChainLogger:
    """TensorBoard events of one chain, written live (flushed every generation), in this
    thread (``sweep.observe.events.EventFile``: no writer thread beside the chain).

    Hyperparameters (``params``, the searched config paths, plus the key config values) are
    written once, at construction, as an HParams session and as a ``config/hparams`` text
    table; ``close(summary)`` adds the final metrics (``final/...``) and ends the session.
    """

    def __init__(self, log_dir: str | Path, *, config: ChainConfig,
                 params: Mapping[str, Any]) -> None:
        self.log_dir = Path(log_dir)
        self.config = config
        self.params = dict(params)
        self._metric = config.collapse.metric
        # A resumed trial opens a new event file in the same directory: its hyperparameters
        # are there already, and the gap's baseline (generation 0) is read back from them.
        resumed = any(self.log_dir.glob("events.out.tfevents.*"))
        self._baseline: float | None = self._read_baseline() if resumed else None
        self._family_stats: frozenset[str] | None = None
        self._last_generation = 0
        self._closed = False
        self.events = EventFile(self.log_dir)
        self.hparams = self._hparam_dict()
        if not resumed:
            self._write_hparams()

    # ------------------------------------------------------------------ hyperparameters
    def _hparam_dict(self) -> dict[str, bool | int | float | str]:
        flat = flatten(self.config.model_dump(mode="json", exclude={"search", "resources"}))
        keys = list(KEY_CONFIG)
        keys += [f"model.{axis}" for axis in family_of(self.config).size_axes[:1]]
        out = {k: _hparam_value(flat[k]) for k in keys if flat.get(k) is not None}
        out.update({k: _hparam_value(v) for k, v in self.params.items() if v is not None})
        return out

    def _write_hparams(self) -> None:
        exp, ssi = hparams_summaries(self.hparams, FINAL_METRICS.values())
        self.events.add_summary(exp, 0)
        self.events.add_summary(ssi, 0)
        # CleanRL habit: the whole configuration once, as a table (searched values marked).
        flat = flatten(self.config.model_dump(mode="json", exclude={"search", "resources"}))
        flat.update(self.params)
        rows = [[f"**{k}**" if k in self.params else k, v] for k, v in sorted(flat.items())]
        self.events.add_summary(text_summary("config/hparams",
                                             _markdown_table(["param", "value"], rows)), 0)
        self.events.flush()

    # ------------------------------------------------------------------ generations
    def log_generation(self, row: Mapping[str, Any], details: Mapping[str, Any]) -> None:
        """``on_generation`` callback: the row's scalars, the gap, the histogram, samples.

        One event per generation holds them all (TensorBoard reads every value of an event):
        a tag per call cost a queue hand-off to the writer thread each, ~14 per generation,
        which competed with the chain for the interpreter (2.3 ms a generation of a short
        analytic chain; 0.7 ms as one event, flush included)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        g = int(row["generation"])
        self._last_generation = max(self._last_generation, g)
        if self._family_stats is None:
            model: Model | None = details.get("model")
            self._family_stats = frozenset(model.summary()) if model is not None else frozenset()
        # the scalars as TensorBoard's plain scalar values (what tb.scalar builds, without
        # its Summary per value and array round trip: 0.07 ms of a generation's ~1.4 ms; the
        # same protos)
        values = [Summary.Value(tag=tag_for(key, self._family_stats), simple_value=x)
                  for key, value in row.items()
                  if key != "generation" and (x := _number(value)) is not None]
        if (gap := self._gap(row, g)) is not None:
            values.append(Summary.Value(tag=GAP_TAG, simple_value=gap))
        parts = []
        lp = details.get("test_log_prob")
        if lp is not None:
            lp = np.asarray(lp, dtype=np.float64).ravel()
            lp = lp[:: -(-lp.size // HIST_MAX_VALUES) or 1]
            lp = lp[np.isfinite(lp)]
            if lp.size:
                parts.append(histogram_summary(HIST_TAG, lp, bins=HIST_BINS))
        samples = details.get("samples")
        if samples is not None and len(samples) and np.ndim(samples) == 3:  # grey images
            grid = image_grid(np.asarray(samples)[:IMAGES_SHOWN])
            parts.append(image_summary(IMAGES_TAG, (grid * 255).clip(0, 255).astype(np.uint8)))
        elif samples is not None and len(samples):
            byte_level = source_of(self.config).byte_level
            parts.append(text_summary(SAMPLES_TAG, decode_samples(samples, byte_level=byte_level)))
        values += [v for part in parts for v in part.value]
        if values:
            self.events.add_summary(Summary(value=values), g)
        self.events.flush()  # a running sweep shows up in TensorBoard generation by generation

    def _gap(self, row: Mapping[str, Any], g: int) -> float | None:
        """The relative gap of the collapse metric to generation 0 (None: not defined)."""
        value = _number(row.get(self._metric))
        if value is None:
            return None
        if g == 0:
            self._baseline = value
        if self._baseline is None or not math.isfinite(self._baseline):
            return None
        scale = abs(self._baseline) or 1.0  # as sweep.engine.metrics.relative_gaps
        return DIRECTION.get(self._metric, 1) * (value - self._baseline) / scale

    def _read_baseline(self) -> float | None:
        from tensorboard.backend.event_processing.event_accumulator import (
            SCALARS,
            EventAccumulator,
        )

        acc = EventAccumulator(str(self.log_dir), size_guidance={SCALARS: 0})
        acc.Reload()
        tag = tag_for(self._metric)  # every collapse metric has a TAG_GROUPS entry
        if tag not in acc.Tags().get("scalars", []):
            return None
        first = [e.value for e in acc.Scalars(tag) if e.step == 0]
        return float(first[0]) if first else None

    # ------------------------------------------------------------------ the end
    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        """Final metrics (``final/...``) and the HParams session end; then close the file."""
        if self._closed:
            return
        self._closed = True
        if summary is not None:
            finals = scalar_summary((tag, _number(summary.get(key)))
                                    for key, tag in FINAL_METRICS.items())
            if finals.value:
                self.events.add_summary(finals, self._last_generation)
            ok = str(summary.get("status", "finished")) in OK_STATUSES
            self.events.add_summary(session_end_summary(ok=ok), 0)
        self.events.close()

    def __enter__(self) -> ChainLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the sweep
class SweepBoard:
    """``RUN_DIR/tb``: Pareto scatter and results table; step = trials finished when drawn."""

    def __init__(self, run_dir: str | Path, *, tolerance: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.tolerance = tolerance if tolerance is not None else self._read_tolerance()
        self.events = EventFile(self.run_dir / "tb")  # no torch in the driver (observe.events)

    def _read_tolerance(self) -> float | None:
        path = self.run_dir / "sweep.yaml"
        if not path.is_file():
            return None
        import yaml

        from sweep.config import parse_yaml

        try:
            raw = parse_yaml(path.read_text()) or {}
            value = (raw.get("collapse") or {}).get("tolerance")
        except (yaml.YAMLError, AttributeError):
            return None
        if value is None:  # sweep.yaml is resolved, but fall back to the config default
            from sweep.config import CollapseConfig

            value = CollapseConfig().tolerance
        return float(value)

    def update(self, results: pd.DataFrame) -> None:
        """Redraw from ``results`` (results.parquet's frame); step = finished trials."""
        status = results["status"] if "status" in results else None
        step = int((status != "running").sum()) if status is not None else len(results)
        self.events.add_summary(
            image_summary("sweep/pareto", pareto_image(results, tolerance=self.tolerance)), step)
        self.events.add_summary(text_summary("sweep/results", results_markdown(results)), step)
        self.events.flush()

    def close(self) -> None:
        self.events.close()

    def __enter__(self) -> SweepBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pareto_front(flops: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (both minimised), sorted by FLOPs."""
    order = np.lexsort((gap, flops))
    front, best = [], np.inf
    for i in order:
        if gap[i] < best:
            front.append(i)
            best = gap[i]
    return np.array(front, dtype=int)


def pareto_image(results: pd.DataFrame, *, tolerance: float | None = None) -> np.ndarray:
    """The Pareto scatter as an RGB array (H, W, 3), drawn with Agg (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(7, 4.5), dpi=100)
    # fixed margins, not tight_layout(): measuring every tick label's extent to fit them was
    # half of a drawing's ~0.5 s of driver CPU (the CPUs the trials use); these leave room
    # for 7-character tick labels and the axis labels at this size
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.11, top=0.93)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles: list[Any] = []
    df, shown = results, 0
    if {"total_flops", "quality_gap"} <= set(df.columns):
        x = df["total_flops"].to_numpy(float)
        y = df["quality_gap"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
        shown = int(ok.sum())
        if "feasible" in df:
            feasible = df["feasible"].fillna(False).to_numpy(bool)
        elif "collapsed" in df:
            feasible = ~df["collapsed"].fillna(True).to_numpy(bool)
        else:
            feasible = np.ones(len(df), bool)
        colour_by = "param.recursion.regime"
        groups = (df[colour_by].astype(str).to_numpy() if colour_by in df
                  else np.full(len(df), "trials"))
        # the report's vocabulary: regime colour, model-size marker area, cross = collapsed
        size_col = next((c for c in size_columns() if c in df and df[c].nunique() > 1), None)
        areas = marker_areas(df[size_col][ok]) if size_col else {}
        area = (df[size_col].astype(str).map(areas).fillna(MARKER_AREA_ONE).to_numpy(float)
                if size_col else np.full(len(df), MARKER_AREA_ONE))
        names = sorted(set(groups[ok]))
        handles.append(Line2D([], [], color="black", marker="x", ls="", label="collapsed"))
        for name in names:
            colour = regime_color(name, names) if colour_by in df else FALLBACK_COLOR
            for mask, marker in ((feasible, "o"), (~feasible, "x")):
                sel = ok & mask & (groups == name)
                if sel.any():
                    ax.scatter(x[sel], y[sel], c=colour, marker=marker, s=area[sel],
                               edgecolors="black" if marker == "o" else None,
                               linewidths=0.4 if marker == "o" else 1.4)
                    if "quality_gap_se" in df:  # replicates: mean +/- SE over the seeds
                        se = np.nan_to_num(df["quality_gap_se"].to_numpy(float)[sel])
                        ax.errorbar(x[sel], y[sel], yerr=se, fmt="none", ecolor=colour,
                                    elinewidth=0.8, alpha=0.6)
            handles.append(Line2D([], [], color=colour, marker="o", ls="", label=name))
        if size_col:
            ax.text(0.99, 0.01, f"marker area: {size_col.removeprefix('param.model.')} "
                    + " < ".join(areas), transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=7, color="0.3")
        sel = np.flatnonzero(ok & feasible)
        if len(sel) > 1:
            front = sel[pareto_front(x[sel], y[sel])]
            ax.step(x[front], y[front], where="post", color="black", lw=1.2)
            handles.append(Line2D([], [], color="black", lw=1.2, label="feasible Pareto front"))
        if ok.any():
            ax.set_xscale("log")
            if tolerance and np.abs(y[ok]).max() > 30 * tolerance:
                ax.set_yscale("symlog", linthresh=tolerance)
            # a log axis's unlabelled minor ticks (8 a decade, each a tick object of its
            # own) were a third of a drawing's CPU; the decades are labelled without them
            ax.minorticks_off()
    if tolerance is not None:
        ax.axhline(tolerance, **TOLERANCE_STYLE)
        handles.append(Line2D([], [], **TOLERANCE_STYLE, label=f"collapse tolerance {tolerance:g}"))
    ax.set_xlabel("total FLOPs (log scale)")
    ax.set_ylabel("quality gap (mean ± SE over seeds)")
    ax.set_title(f"{shown} of {len(results)} trials (finite gap and FLOPs)")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def results_markdown(results: pd.DataFrame, *, limit: int = 200) -> str:
    """The results table (best quality gap first), at most ``limit`` rows."""
    first = ["number", "trial_id", "status", "quality_gap", "total_flops", "collapsed", "feasible"]
    cols = [c for c in first if c in results] + sorted(c for c in results if str(c).startswith("param."))
    df = results[cols]
    if "quality_gap" in df:
        df = df.sort_values("quality_gap", kind="stable", na_position="last")
    rows = df.head(limit).values.tolist()
    text = _markdown_table(cols, rows)
    if len(df) > limit:
        text += f"\n\n({len(df) - limit} more rows in results.parquet)"
    return text
