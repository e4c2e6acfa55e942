"""Several short Optuna trials in one Tune trial (``search.batch``).

Every Tune trial costs a fixed turn: the driver's result handling and scheduling, the
trial's stop and start on a reused process (a new thread): traced on 2 busy cores
(2026-12-02), 25-40 ms from one Tune trial's last report to the next one's start, and its
first Optuna trial ~60 ms slower than the next ones (0.1-0.2 s, and ~0.45 s more in that
first trial before trial processes got one malloc arena, ``sweep.engine.allocator``). That
is nothing next to a GPU chain of minutes and a fifth of a 0.4-s analytic chain. With
``search.batch: auto`` (the default) the searcher hands one Tune trial several Optuna
trials once it has seen how long they take, so that a Tune trial lasts about
``TARGET_S``; long trials stay one per Tune trial.

A batch is a Tune trial config ``{"__batch": "<json>"}``: a list of ``{"number", "params"}``,
one per Optuna trial. The trainable runs them one after another, each as its own trial
(``run_trial``: its own directory ``trials/<tune id>-<number>``, ledger records, checkpoints,
TensorBoard run), and the final report carries every member's metrics (``BATCH_RESULTS``);
the searcher tells Optuna each one. A killed or failed batch is retried by Tune: members
done are looked up in the ledger, the one in flight resumes from its checkpoint.

Sizes follow guided scheduling: at most ``remaining / (2 x concurrency)`` so that the last
Tune trials are small and the workers finish together.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from typing import Any

#: A batched Tune trial lasts about this long (its fixed cost is then ~1% of it). 2 s until
#: 2026-12-02: a sweep of 96 ~0.7-0.9-s trials on 2 cores ran in 26-27 Tune trials instead of
#: 52 and its wall time fell 5-9% (5 s against 2 s, alternated twice in one Ray; 6 s: 3-4%);
#: the driver hears a batch's results (status line, Optuna) at its end, so the target stays
#: a few seconds.
TARGET_S = 5.0
#: At most this many Optuna trials in one Tune trial.
MAX_BATCH = 32
#: The sizer uses the median wall time of this many recent Optuna trials.
WINDOW = 16
#: The Tune config key of a batch, and the final result key holding its members' metrics.
BATCH_KEY = "__batch"
BATCH_RESULTS = "batch_results"


class BatchSizer:
    """How many Optuna trials the next Tune trial gets.

    ``setting``: ``"auto"`` or a fixed size (``search.batch``). Auto starts at 1 (nothing
    measured yet) and then aims at ``TARGET_S`` per Tune trial from the observed seconds
    per Optuna trial; both are capped by the guided-scheduling tail.
    """

    def __init__(self, setting: int | str, *, concurrency: int) -> None:
        self.setting = setting
        self.concurrency = max(1, concurrency)
        self.seconds: deque[float] = deque(maxlen=WINDOW)

    def observe(self, seconds: float) -> None:
        """One Optuna trial took ``seconds`` (its chains' wall time)."""
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0:
            self.seconds.append(float(seconds))

    def size(self, remaining: int) -> int:
        if remaining <= 1:
            return max(remaining, 0)
        tail = max(1, remaining // (2 * self.concurrency))
        if self.setting != "auto":
            return max(1, min(int(self.setting), remaining))
        if not self.seconds:
            return 1
        per = max(statistics.median(self.seconds), 1e-3)
        return max(1, min(math.floor(TARGET_S / per), tail, MAX_BATCH))


def encode(members: list[dict[str, Any]]) -> dict[str, str]:
    """The Tune config of a batch: ``members`` = ``[{"number": n, "params": {...}}, ...]``."""
    return {BATCH_KEY: json.dumps(members, sort_keys=True)}


def members(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The members of a batched Tune trial's config; None for a one-trial config."""
    text = config.get(BATCH_KEY)
    return None if not text else json.loads(text)


def member_dir(tune_trial_id: str, number: int) -> str:
    """The directory name (under trials/) and ledger ``trial_id`` of a batch member."""
    return f"{tune_trial_id}-{number}"


def results_by_number(result: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The members' metrics in a batch's final result, by Optuna trial number."""
    text = (result or {}).get(BATCH_RESULTS)
    if not text:
        return {}
    return {int(m["number"]): m for m in json.loads(text)}
