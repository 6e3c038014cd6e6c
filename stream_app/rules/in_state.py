"""The rules over a batch of customers' windows: evaluated going on from the streaks of rules
with `for` that the customers' state keeps, and the streaks left running kept for the next batch."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from stream_app.contracts.calendar import months_of_days
from stream_app.rules.evaluate import Evaluation, Streaks, evaluate
from stream_app.rules.pack import Ruleset
from stream_app.windows.state import Windows, rule_key

__all__ = ["evaluate_rules", "remember_streaks"]


def evaluate_rules(w: Windows, ruleset: Ruleset, features: dict[str, np.ndarray], now_day: np.ndarray) -> Evaluation:
    """Evaluate the rules, going on from the streaks of rules with `for` kept in the customers' state."""
    lasting, keys = _lasting(ruleset)
    streaks = Streaks.empty(len(w.customers), len(ruleset.rules))
    streaks.count[:, lasting], streaks.period[:, lasting] = w.streaks(keys)
    periods = {"daily": now_day, "monthly": months_of_days(now_day)}
    regions = np.array([t.region if t else "" for t in w.text], dtype=object) if ruleset.scoped else None
    return evaluate(ruleset, features, streaks, periods, regions)


def remember_streaks(w: Windows, ruleset: Ruleset, ev: Evaluation, rows: Sequence[int]) -> None:
    """Keep the streaks of `rows` that an evaluation left running, for the next one."""
    lasting, keys = _lasting(ruleset)
    w.set_streaks(keys, ev.streaks.count[:, lasting], ev.streaks.period[:, lasting], rows)


def _lasting(ruleset: Ruleset) -> tuple[list[int], list[int]]:
    """The rules with `for` (their columns, and their keys in the state)."""
    lasting = [j for j, c in enumerate(ruleset.rules) if c.rule.for_ > 1]
    return lasting, [rule_key(ruleset.ids[j]) for j in lasting]
