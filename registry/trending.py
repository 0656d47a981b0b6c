"""The trending score: uses in the last 7 days, decayed with a one-day half-life.

A style's decayed popularity at time t is ``S(t) = sum_i 2^-((t - t_i) / H)`` over its uses at times
t_i. Every style decays by the same factor as time passes, so the *order* never needs a recompute:
``S(t) = 2^(-t/H) * sum_i 2^(t_i/H)``. We store ``trending_score = log2(sum_i 2^(t_i/H))`` (t in
days since `EPOCH`), which only changes when the style is used:

    new = logaddexp2(old, t_now / H)

and ``browse(sort="trending")`` reads it straight from an index. Logs keep the number small (about
t/H + log2(uses)), so it never overflows. The 7-day window: browse shows only styles used in the last
7 days, and uses older than that weigh at most 2^-7 (<1%) of a fresh one.
"""

from __future__ import annotations

import datetime as dt
import math

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HALF_LIFE_DAYS = 1.0
WINDOW = dt.timedelta(days=7)


def use_weight(when: dt.datetime) -> float:
    """log2 of one use's weight at `when`: t / H."""
    return (when - EPOCH).total_seconds() / 86400.0 / HALF_LIFE_DAYS


def add_use(score: float | None, when: dt.datetime, uses: int = 1) -> float:
    """The stored score after `uses` more uses at `when` (logaddexp2 of the old score and the new weight)."""
    new = use_weight(when) + math.log2(uses)
    if score is None:
        return new
    high, low = max(score, new), min(score, new)
    return high + math.log2(1.0 + 2.0 ** (low - high))


def window_floor(now: dt.datetime) -> float:
    """Lowest score a style used inside the window can have: one use exactly `WINDOW` ago."""
    return use_weight(now - WINDOW)


def decayed_uses(score: float | None, now: dt.datetime) -> float:
    """S(now): the decayed use count, for display."""
    return 0.0 if score is None else 2.0 ** (score - use_weight(now))
