"""A rule's summary as an agent reads it: the customer's values filled in, changes said in words
("down 64%"), and what is usual for customers like them where the segment's baseline is known.

Summaries are Python format strings over feature names, with two additions:
`{x:change}` says a fraction as "down 64%", "up 43%" or "unchanged", and a value that is not
known (NaN) reads "unknown" whatever its format, never "nan".

>>> render("outgoing minutes {mou_out_m1:.0f}, {mou_out_mom:change} from {mou_out_m2:.0f}",
...        {"mou_out_m1": 120.0, "mou_out_mom": -0.642, "mou_out_m2": 335.0})
'outgoing minutes 120, down 64% from 335'
>>> change(0.0), change(float("nan"))
('unchanged', 'unknown')
"""

from __future__ import annotations

import difflib
import math
import re
import string
from typing import Any, Iterable, Mapping

from stream_app.errors import ConfigError
from stream_app.features.baselines import BASELINED, column_name

__all__ = ["SummaryError", "change", "check_summary", "jargon", "like_them", "render"]

UNKNOWN = "unknown"


class SummaryError(ConfigError):
    """A rule's summary that cannot be rendered: an unknown placeholder or format."""


def change(fraction: float) -> str:
    """A change as a person says it: -0.642 is "down 64%"; rounding to 0% is "unchanged"."""
    if not math.isfinite(fraction):
        return UNKNOWN
    points = round(abs(fraction) * 100)
    return "unchanged" if points == 0 else f"{'down' if fraction < 0 else 'up'} {points:,}%"


class _Words(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and not math.isfinite(value):
            return UNKNOWN
        if format_spec == "change":
            return change(float(value))
        return super().format_field(value, format_spec)


_WORDS = _Words()


def render(summary: str, values: Mapping[str, float]) -> str:
    """The summary with the customer's values filled in."""
    return _WORDS.vformat(summary, (), values)


def like_them(values: Mapping[str, float], names: Iterable[str]) -> str:
    """"; customers like them: down 5%" for the first of `names` whose change the segment's
    baseline follows, where that baseline is known today; "" otherwise. It is what tells an agent
    that a fall is the customer's own and not the season's."""
    for name in names:
        if name in BASELINED:
            median = values.get(column_name(50, name), math.nan)
            return f"; customers like them: {change(median)}" if math.isfinite(median) else ""
    return ""


#: Words that mean something to the people who build churnwatch and nothing to a customer:
#: feature names and other identifiers, standard deviations, month codes, file names, "nan".
_JARGON = re.compile(r"\b(?:[A-Za-z]+_\w+|sd|m\d|z-?scores?|\w+\.(?:md|ya?ml|py|json)|nan|inf)\b", re.IGNORECASE)


def jargon(text: str) -> list[str]:
    """The internal words in a text an agent or a manager reads.

    >>> jargon("model: mou_out_m1 is 3 (+5.0 sd), see DOMAIN.md"), jargon("Outgoing minutes last month: 120")
    (['mou_out_m1', 'sd', 'DOMAIN.md'], [])
    """
    return _JARGON.findall(text)


def check_summary(summary: str, known: set[str]) -> None:
    """Raise `SummaryError` for a placeholder that names no feature, a format that cannot render,
    or words of ours in the text agents read."""
    words = jargon("".join(literal for literal, _, _, _ in _WORDS.parse(summary)))
    if words:
        raise SummaryError(f"the text agents read says {', '.join(repr(w) for w in words)}: say it in their words "
                           "(\"outgoing minutes last month\", not mou_out_m1; placeholders in {} are fine)")
    for _, field, _, _ in _WORDS.parse(summary):
        if field is not None and field not in known:
            near = difflib.get_close_matches(field, known, n=1)
            hint = f"; did you mean {{{near[0]}}}?" if near else "; placeholders are feature names"
            raise SummaryError(f"placeholder {{{field}}} names no feature{hint}")
    try:
        render(summary, {n: 0.0 for n in known})
    except (ValueError, IndexError, KeyError) as exc:
        raise SummaryError(f"cannot be rendered: {exc}") from None
