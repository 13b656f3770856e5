"""Dates of a forecasting series: parsing a history's timestamps and continuing them past its end.

A forecast's timestamps continue the history's spacing: the median gap of its last rows, or,
for monthly, quarterly or yearly series (every row on the same day of the month, or every row
on a month's last day), whole calendar months, since no fixed gap lands on the 1st of each month;
and for business-day series (daily rows, none on a Saturday or Sunday, a weekend skipped among
the last rows), the next weekdays, as pandas' ``BDay`` offset (holidays are not known).
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

__all__ = ["future_dates", "to_datetime"]


def to_datetime(text: str, date_format: str | None) -> datetime:
    """ISO 8601 (``datetime.fromisoformat``), or ``strptime`` with ``date_format``; ValueError if not."""
    return datetime.fromisoformat(text) if date_format is None else datetime.strptime(text, date_format)


def _month_steps(parsed: list[datetime], steps: int) -> list[datetime] | None:
    """``steps`` dates after the last, k calendar months apart, when the dates are k months apart on
    one day of the month (or on month ends) at one time of day; None otherwise."""
    months = [d.year * 12 + d.month - 1 for d in parsed]
    gaps = {b - a for a, b in itertools.pairwise(months)}
    if len(gaps) != 1 or (k := gaps.pop()) < 1 or len({(d.time(), d.tzinfo) for d in parsed}) != 1:
        return None
    month_end = all(d.day == calendar.monthrange(d.year, d.month)[1] for d in parsed)
    if not month_end and len({d.day for d in parsed}) != 1:
        return None
    out = []
    for i in range(1, steps + 1):
        year, month = divmod(months[-1] + k * i, 12)
        last_day = calendar.monthrange(year, month + 1)[1]
        out.append(parsed[-1].replace(year=year, month=month + 1, day=last_day if month_end else min(parsed[-1].day, last_day)))
    return out


def _weekday_steps(parsed: list[datetime], steps: int, step: timedelta) -> list[datetime] | None:
    """``steps`` weekdays after the last date, for a daily series with no weekend rows that skips a
    weekend among ``parsed``; None otherwise."""
    if step != timedelta(days=1) or any(d.weekday() >= 5 for d in parsed):
        return None
    if not any(b - a == timedelta(days=3) and a.weekday() == 4 for a, b in itertools.pairwise(parsed)):
        return None
    out, day = [], parsed[-1]
    while len(out) < steps:
        day += step
        if day.weekday() < 5:
            out.append(day)
    return out


def future_dates(dates: Sequence[str], steps: int, date_format: str | None = None) -> list[str] | None:
    """``steps`` timestamps after the last of ``dates``, at the spacing of the last few (the median
    gap, or whole calendar months), written as the dates are (ISO 8601, or ``date_format``); None
    when the dates do not parse or are not increasing."""
    try:
        parsed = [to_datetime(d, date_format) for d in dates[-25:]]
    except ValueError:
        return None
    if len(parsed) < 2:
        return None
    gaps = sorted((b - a) for a, b in itertools.pairwise(parsed))
    step = gaps[len(gaps) // 2]
    if step <= timedelta(0):
        return None
    stamps = (_month_steps(parsed, steps) or _weekday_steps(parsed, steps, step)
              or [parsed[-1] + step * (i + 1) for i in range(steps)])
    if date_format is not None:
        return [s.strftime(date_format) for s in stamps]
    last = dates[-1]
    if " " not in last and "T" not in last:  # dates without a time
        return [s.strftime("%Y-%m-%d") for s in stamps]
    sep = "T" if "T" in last else " "  # written as the history writes them, a time-zone offset kept
    return [s.isoformat(sep=sep, timespec="seconds") for s in stamps]
