"""Exits and returns: a customer who leaves, and one who comes back (a win-back).

A number's exits and returns come on the billing topic, in order for each customer: a
`disconnect` or a `port_out` ends the line, a `port_in` (the number ported back) or a
`reconnect` brings it back. The state keeps the exit the customer is in, and a return clears
it. From then on the customer is a newcomer on an old number: the months and days before the
return are forgotten (`forget_before`), so that what the rules and the model compare is what
the customer has done since. Those months were counted in the reports when the exit closed them,
and usage or bills dated before the return that are read after it are refused
(`before_return`): they would fill the forgotten months again.

A customer back on a new line is a new customer whose first profile names the line the same
person left (`Profile.previous_customer_id`).

`apply` notes each exit and return of a batch here (`Moves`). The churn events, the returns
sent on and the report counters are taken from these notes, not from comparing the state
before and after the batch: an exit and a return in one batch both count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

import msgspec
import numpy as np

from stream_app.contracts.calendar import LocalClock, month_of_day
from stream_app.contracts.events import Billing, Profile
from stream_app.errors import InvalidEvent
from stream_app.windows.state import EXIT_KINDS, StateTail, Windows

__all__ = ["EXITS", "RETURNS", "Exit", "Moves", "Return", "before_return", "first_profile", "forget_before",
           "record_exit", "record_move", "record_return"]

EXITS = frozenset(("disconnect", "port_out"))
RETURNS = frozenset(("port_in", "reconnect"))


class Exit(NamedTuple):
    ts: int
    kind: str  # disconnect or port_out
    reason_code: int | None


class Return(NamedTuple):
    ts: int
    previous: str  # the line the customer had left: their own, back on the same number
    left_ts: int  # when they had left that line (0: another line, whose state is kept elsewhere)


@dataclass
class Moves:
    """A batch's exits and returns, by row: the last of each kind for a customer."""

    exits: dict[int, Exit] = field(default_factory=dict)
    returns: dict[int, Return] = field(default_factory=dict)
    # Customers back on their number: their buckets as they were before the return forgot them,
    # for what their exit counts and corrects (`as_at_exit`).
    forgotten: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def drop(self, cust: int) -> None:
        """Forget what a customer erased in the batch did before the tombstone."""
        for noted in (self.exits, self.returns, self.forgotten):
            noted.pop(cust, None)

    def as_before_return(self, w: Windows, i: int) -> tuple[Windows, int]:
        """The windows and row of row `i` as they were before a return in this batch forgot them."""
        if i not in self.forgotten:
            return w, i
        old = w.subset([i])
        old.daily[0], old.monthly[0] = self.forgotten[i]
        return old, 0

    def as_at_exit(self, w: Windows, i: int) -> tuple[Windows, int]:
        """The windows and row to count row `i`'s exit of this batch on: as before the return,
        unless the exit came after it."""
        after = i in self.returns and i in self.exits and self.exits[i].ts > self.returns[i].ts
        return (w, i) if after else self.as_before_return(w, i)


def record_move(w: Windows, cust: int, e: Billing, ts: int, moves: Moves) -> bool:
    """Keep a billing event's exit or return, if it is one; True for a return."""
    if e.kind in EXITS:
        record_exit(w.rec, cust, e, ts, moves)
    return e.kind in RETURNS and record_return(w, cust, ts, moves)


def before_return(back_ts: int) -> InvalidEvent:
    """Why usage or a bill dated before the customer came back is refused."""
    when = datetime.fromtimestamp(back_ts, timezone.utc).isoformat()
    return InvalidEvent("before_return", "ts", f"dated before the customer came back on {when}: the months "
                                               "before are closed (windows/lifecycle.py)")


def first_profile(w: Windows, cust: int, e: Profile, ts: int, moves: Moves) -> None:
    """Before a profile is applied: if it is the customer's first, when they joined (a later
    profile may carry a new activation date), and whether it names a line they had left."""
    if w.rec["profile_ts"][cust]:
        return
    w.text[cust] = msgspec.structs.replace(w.text[cust] or StateTail(), joined=e.activation_date.toordinal())
    if e.previous_customer_id and e.previous_customer_id != w.customers[cust]:  # back on a new line
        moves.returns[cust] = Return(ts, e.previous_customer_id, 0)


def record_exit(rec: np.ndarray, cust: int, e: Billing, ts: int, moves: Moves) -> None:
    """Keep an exit, unless the customer is gone already: a second record of the same exit (a
    disconnect after the port-out) changes nothing."""
    if rec["exit_ts"][cust]:
        return
    rec["exit_ts"][cust], rec["exit_reason"][cust] = ts, e.reason_code or 0
    rec["exit_kind"][cust] = EXIT_KINDS.index(e.kind)
    moves.exits[cust] = Exit(ts, e.kind, e.reason_code)


def record_return(w: Windows, cust: int, ts: int, moves: Moves) -> bool:
    """A number back with us after its exit; False, and nothing done, for one that had not left."""
    left = int(w.rec["exit_ts"][cust])
    if not left or ts <= left:
        return False
    w.rec["exit_ts"][cust], w.rec["exit_reason"][cust], w.rec["exit_kind"][cust] = 0, 0, 0
    w.text[cust] = msgspec.structs.replace(w.text[cust] or StateTail(), back_ts=ts)
    moves.returns[cust] = Return(ts, w.customers[cust], left)
    return True


def forget_before(w: Windows, moves: Moves, local: LocalClock) -> None:
    """Forget, for the customers back on their number, the months before the one they came back
    in and the days before the day (once the batch's counters are added), and the contacts of
    those months; their tenure counts from the day they came back."""
    for cust, back in moves.returns.items():
        if not back.left_ts:
            continue
        moves.forgotten[cust] = (w.daily[cust].copy(), w.monthly[cust].copy())
        day, month = local(back.ts)
        w.rec["activation"][cust] = day  # their tenure starts again
        w.monthly[cust, max(0, int(w.month0[cust]) - month + 1):] = 0
        w.daily[cust, max(0, int(w.day0[cust]) - day + 1):] = 0
        usage_month = month_of_day(int(w.day0[cust])) if w.day0[cust] > 0 else 0
        for slot in range(w.rec["contacts"].shape[1]):  # slot s: the month s before the month of usage
            if usage_month - slot < month:
                w.rec["contacts"][cust, slot] = 0
