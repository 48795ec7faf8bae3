"""Small statistics for reporting: mean and spread over seeds or repeats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, range and count of some values."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Summary of the values; the standard deviation is the sample one (0 for a single value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("Cannot summarize no values")
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Summary(mean=mean, sd=sd, lo=min(xs), hi=max(xs), n=n)


def median(values: Iterable[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("Cannot take the median of no values")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def fmt_num(value: float, digits: int = 2) -> str:
    """A number with thousands separators and `digits` decimals (no decimals for large values)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_mean_sd(values: Iterable[float], digits: int = 2) -> str:
    """`mean ± sd` over the values, or just the value when there is one."""
    s = summarize(values)
    if s.n == 1:
        return fmt_num(s.mean, digits)
    return f"{fmt_num(s.mean, digits)} ± {fmt_num(s.sd, digits)}"


def fmt_ratio(value: float) -> str:
    """A ratio such as `31.4x` (one decimal below 100, none above)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return "–"
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"
