"""The HTML page of a sweep report: the answer first, then tables, figures, config, versions.

Self-contained: the PNGs are embedded as data URIs, so the page can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from sweep.analysis.format import (
    fmt_flops,
    fmt_gap,
    fmt_interval,
    fmt_value,
    short_names,
    trial_label,
)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _cell(v: Any, col: str = "") -> str:
    if isinstance(v, float) and "FLOPs" in col:
        return fmt_flops(v)
    if isinstance(v, float):
        return fmt_gap(v) if "gap" in col else fmt_value(v)
    if isinstance(v, dict):
        names = short_names(list(v))
        return ", ".join(f"{names[k]}={fmt_value(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class=note>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c), c))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _trial_rows(trials: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    return [{**{k: t.get(v) for k, v in extra.items()}, "trial (Tune id #Optuna)": trial_label(t),
             **_intervals(t), "params": t["params"]} for t in trials]


def _intervals(t: dict[str, Any]) -> dict[str, Any]:
    """Quality gap as mean ± SE, its upper bound, chains collapsed, cost as mean ± SE."""
    n = int(t.get("n_seeds") or 1)
    rate = t.get("collapse_rate")
    return {"quality gap (mean ± SE)": fmt_interval(t["quality_gap"], t.get("quality_gap_se")),
            "upper bound": fmt_gap(t.get("quality_gap_ucb")) if n > 1 else "- (1 seed)",
            "chains collapsed": f"{round(rate * n)}/{n}" if isinstance(rate, (int, float)) else "",
            "total FLOPs (mean ± SE)": fmt_interval(t["total_flops"], t.get("total_flops_se"),
                                                    fmt_flops)}


def _confirmation_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        c = row["confirmation"]
        out.append({"trial": row["trial_id"], "params": row["params"],
                    "search gap": fmt_interval(row["search"]["quality_gap"],
                                               row["search"].get("quality_gap_se")),
                    **({"status": "not run yet"} if c is None else {
                        **{f"fresh seeds: {k}": v for k, v in _intervals(c).items()},
                        "confirmed": "yes" if c.get("confirmed") else "no"})})
    return out


def _figure(title: str, caption: str, path: Path | None, note: str | None) -> str:
    body = f"<p class=note>{html.escape(caption)}</p>{_img(path)}" if path is not None else \
        f"<p class=note>{html.escape(note or '')}</p>"
    return f"<h2>{html.escape(title)}</h2>{body}"


def _health(summary: dict[str, Any]) -> str:
    """A red banner when the sweep's health check failed, else one line of note."""
    warning = summary.get("health_warning")
    if warning:
        return f'<p class="health-failed" id="health-check-failed">{html.escape(warning)}</p>\n'
    note = summary.get("health_note")
    return f'<p class="note">{html.escape(note)}</p>\n' if note else ""


def render_html(name: str, summary: dict[str, Any],
                figures: list[tuple[str, str, Path | None, str | None]], *,
                config_text: str, versions: dict[str, str], generated: str) -> str:
    c = summary["counts"]
    tol = summary["tolerance"]
    if summary.get("answer_text"):
        answer = f"{summary['answer_text']}."
    elif summary["cheapest_feasible_text"]:
        answer = (f"{summary['cheapest_feasible_text']} — not confirmed on unseen seeds "
                  "(confirmation off, not run yet, or no candidate held).")
    else:
        answer = "No configuration avoided collapse (yet)."
    level = f"{summary.get('confidence', 0.9):.0%}"
    front = sorted(summary["pareto_front"], key=lambda t: t["total_flops"])
    regimes = [{"regime": k, "feasible": v["feasible"], **_trial_rows([v])[0]}
               for k, v in summary["best_per_regime"].items()]
    imp = [{"objective": obj, **{p: f"{x:.2f}" for p, x in vals.items()}}
           for obj, vals in summary["importance"].items() if vals]
    figs = "".join(_figure(*f) for f in figures)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>collapse-sweep report: {html.escape(name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;color:#222;
padding:0 1em}} img{{max-width:100%;border:1px solid #ddd}} table{{border-collapse:collapse;
font-size:13px;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f2f2f2}} .answer{{font-size:1.15em;background:#eef7ee;padding:.8em;
border-left:4px solid #2ca02c}} pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}
.note{{color:#555;font-size:13px}} .health-failed{{background:#fdecea;color:#611a15;
padding:.8em;border-left:6px solid #d62728;font-weight:600}}</style></head><body>
<h1>Sweep {html.escape(name)}</h1>
<p>{c['trials']} trials: {c['finished']} finished, {c['failed']} failed, {c['running']} running;
{c['feasible']} do not collapse (quality gap on {html.escape(str(summary['collapse_metric']))}
&le; {tol:g}). Generated {html.escape(generated)}. Data: <a href="../results.csv">results.csv</a>,
<a href="../generations.csv">generations.csv</a>.</p>
{_health(summary)}<p class="answer"><b>Cheapest non-collapsing configuration:</b> {html.escape(answer)}</p>
<p class=note>Each trial runs several chains (seeds); its quality gap and cost are means with
standard errors, and it counts as not collapsing when the one-sided {level} upper confidence
bound of its mean gap is within the tolerance. The answer is the cheapest configuration that
stays within the tolerance when re-run on seeds the search never used.</p>
<h2>Confirmation on unseen seeds</h2>{_table(_confirmation_rows(summary.get("confirmation") or []))}
<h2>Feasible Pareto front (quality gap vs total FLOPs)</h2>{_table(_trial_rows(front))}
<h2>Best per regime</h2><p class=note>feasible = False: no trial of that regime avoided
collapse; the lowest-gap one is shown.</p>{_table(regimes)}
<h2>Parameter importance</h2><p class=note>Optuna fANOVA, from
{html.escape(str(summary.get('importance_source')))}.</p>{_table(imp)}
{figs}
<h2>Exact config (sweep.yaml)</h2><pre>{html.escape(config_text)}</pre>
<h2>Versions</h2>{_table([versions])}
</body></html>"""
