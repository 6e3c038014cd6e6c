"""CSV files as the commands write them for a desk to open in a spreadsheet.

A spreadsheet takes a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage return
before one) for a formula, and runs it when the file is opened: OWASP's "CSV injection". The
lists carry text that arrives in events (a region, a plan, a competitor's name, the reasons an
agent reads), so such a cell is written as text, behind an apostrophe, which the spreadsheet shows
without it. Numbers stay numbers: a credit balance of -5 is still a number.
"""

from __future__ import annotations

import csv
from typing import IO, Any, Iterable, Mapping, Sequence

__all__ = ["write_csv", "as_text"]

_FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")


def as_text(value: Any) -> Any:
    """`value`, or a text cell a spreadsheet would run, kept as text."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_FIRST) else value


def write_csv(f: IO[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]], **options: Any) -> None:
    """`rows` under a header of `columns` (options as `csv.DictWriter` takes them), no cell a formula."""
    writer = csv.DictWriter(f, columns, **options)
    writer.writeheader()
    writer.writerows({k: as_text(v) for k, v in row.items()} for row in rows)
