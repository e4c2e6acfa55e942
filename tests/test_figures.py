"""Figures answer at a glance: log compute, size as marker, one colour per regime in the
report and TensorBoard, the truth as a reference line, intervals, no empty frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from test_analysis import make_run  # tests/ is on sys.path (no package)

from sweep.analysis.core import load_sweep
from sweep.config import load_config
from sweep.observe.board import pareto_image
from sweep.observe.palette import REGIME_COLORS, marker_areas, regime_color, sorted_sizes
from sweep.report import build
from sweep.report.build import build_report, fig_compute_quality, truth_reference


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the report saves, in order."""
    saved = []

    def keep(fig, path):  # save without closing, so the test can inspect the axes
        saved.append(fig)
        fig.savefig(path, format="png", dpi=40)
        return path

    monkeypatch.setattr(build, "_save", keep)
    return saved


def results_with_sizes(n: int = 12, *, se: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    regimes = np.array(["replace", "accumulate", "accumulate-subsample"])[np.arange(n) % 3]
    dims = np.array([1, 4])[(np.arange(n) // 3) % 2]
    gap = rng.uniform(0.0, 0.2, n)
    df = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(n)], "number": range(n), "status": "finished",
        "quality_gap": gap, "total_flops": 1e9 * 10.0 ** rng.uniform(0, 3, n),
        "collapsed": gap > 0.1, "feasible": gap <= 0.1, "param.recursion.regime": regimes,
        "param.model.dim": dims, "param.recursion.real_fraction": rng.uniform(0, 1, n)})
    if se:
        df["quality_gap_se"] = 0.01
        df["total_flops_se"] = 0.0
    return df


def sweep_of(tmp_path, df: pd.DataFrame):
    run = make_run(tmp_path)
    sweep = load_sweep(run)
    sweep.results = df
    return sweep


def test_compute_axis_is_log_and_model_size_is_the_marker_area(tmp_path, figures):
    sweep = sweep_of(tmp_path, results_with_sizes())
    fig_compute_quality(sweep, tmp_path / "cq.png")
    ax = figures[-1].axes[0]
    assert ax.get_xscale() == "log"
    assert ax.xaxis.get_offset_text().get_text() == ""  # no '1e11' offset
    areas = marker_areas([1, 4])
    assert areas["4"] > areas["1"]
    drawn = {float(a) for c in ax.collections for a in np.atleast_1d(c.get_sizes())}
    assert {areas["1"], areas["4"]} <= drawn
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dim 1" in labels and "dim 4" in labels


def test_intervals_where_replicates_exist(tmp_path, figures):
    from matplotlib.collections import LineCollection

    for se, expect in ((False, 0), (True, 3)):  # one error-bar set per regime
        fig_compute_quality(sweep_of(tmp_path / str(se), results_with_sizes(se=se)),
                            tmp_path / f"{se}.png")
        bars = [c for c in figures[-1].axes[0].collections if isinstance(c, LineCollection)
                and len(c.get_segments()) == 4]  # 4 trials per regime
        assert len(bars) >= expect and (expect or not bars)


def test_one_colour_per_regime_in_the_report_and_tensorboard(tmp_path):
    df = results_with_sizes()
    df = df[df["param.recursion.regime"] == "replace"]
    rgb = np.round(np.array(to_rgb(REGIME_COLORS["replace"])) * 255).astype(int)

    def has_colour(img: np.ndarray) -> bool:
        return bool((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) <= 2).sum() > 20)

    board = pareto_image(df, tolerance=0.1)
    import matplotlib.image as mpimg

    path = fig_compute_quality(sweep_of(tmp_path, df), tmp_path / "cq.png")
    report = (mpimg.imread(path)[..., :3] * 255).round().astype(int)
    assert has_colour(board) and has_colour(report)
    assert regime_color("replace") == REGIME_COLORS["replace"]
    assert regime_color("mine", ["mine", "yours"]) != regime_color("yours", ["mine", "yours"])
    assert sorted_sizes(["m", "xs", "s"]) == ["xs", "s", "m"]
    assert sorted_sizes([16, 4, 128]) == ["4", "16", "128"]


def test_gmm_report_draws_the_truth_and_omits_the_theory_section(tmp_path, figures):
    run = make_run(tmp_path, family="gmm", name="gmm")
    (run / "report").mkdir()
    (run / "report" / "theory.png").write_bytes(b"stale")
    text = build_report(run).read_text()
    assert "Theory overlay" not in text  # no closed form for this family: no section at all
    assert not (run / "report" / "theory.png").exists()
    cfg = load_sweep(run).config
    truth = truth_reference(cfg, "minority_weight")
    assert truth == cfg.model.minority_weight
    tail = next(f for f in figures if f._suptitle and f._suptitle.get_text() == "Tails erode first")
    ys = [line.get_ydata()[0] for ax in tail.axes for line in ax.get_lines()
          if line.get_linestyle() == ":"]
    assert truth in ys


def test_truth_lm_minority_share_reference():
    cfg = load_config({"model": {"family": "gpt"}, "data": {"source": "truth-lm",
                                                           "minority_share": 0.07}})
    assert truth_reference(cfg, "minority_share") == pytest.approx(0.07)
    assert truth_reference(cfg, "real_nll") is None


def _star(ax) -> tuple[tuple[float, float], str]:
    stars = [c for c in ax.collections if np.atleast_1d(c.get_sizes())[0] == build.STAR_AREA]
    assert len(stars) == 1
    label = next(t.get_text() for t in ax.get_legend().get_texts() if "answer" in t.get_text()
                 or "cheapest non-collapsing" in t.get_text())
    return tuple(stars[0].get_offsets()[0]), label


def test_the_star_marks_the_confirmed_answer_not_only_the_search_front(tmp_path, figures,
                                                                      monkeypatch):
    df = results_with_sizes()
    sweep = sweep_of(tmp_path, df)
    feasible = df[df["feasible"]].sort_values("total_flops")
    cheapest, confirmed = feasible.iloc[0], feasible.iloc[1]  # the search's pick, the answer

    def star_with(answer, top: int, name: str):
        monkeypatch.setattr(build, "confirmation_summary",
                            lambda s: {"answer": answer, "confirm_top": top})
        fig_compute_quality(sweep, tmp_path / name)
        return _star(figures[-1].axes[0])

    # before confirmation (none run): the search's cheapest feasible point, said unconfirmed
    point, label = star_with(None, 3, "a.png")
    assert point == pytest.approx((cheapest.total_flops, cheapest.quality_gap))
    assert label == "cheapest non-collapsing (search; not confirmed)"

    # confirmation certified a dearer candidate (the cheapest one's fresh-seed bound failed)
    answer = {"number": int(confirmed.number), "confirmation": {"n_seeds": 20}}
    point, label = star_with(answer, 3, "b.png")
    assert point == pytest.approx((confirmed.total_flops, confirmed.quality_gap))
    assert label == "answer: confirmed on 20 unseen seeds"

    # confirmation off: the search's pick, as the answer
    assert star_with(None, 0, "c.png")[1] == "cheapest non-collapsing"
