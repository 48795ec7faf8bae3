import math

import pytest

from harness.stats import fmt_mean_sd, fmt_num, fmt_ratio, median, summarize


def test_summarize_uses_the_sample_standard_deviation():
    s = summarize([1, 2, 3, 4])
    assert s.mean == 2.5
    assert s.sd == pytest.approx(math.sqrt(5 / 3))
    assert (s.lo, s.hi, s.n) == (1, 4, 4)
    assert summarize([7]).sd == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_median_of_odd_and_even_counts():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def test_formatting():
    assert fmt_num(12345.678) == "12,346"
    assert fmt_num(0.12345, 3) == "0.123"
    assert fmt_num(float("nan")) == "–"
    assert fmt_mean_sd([0.5]) == "0.50"
    assert fmt_mean_sd([0.5, 0.7], 2) == "0.60 ± 0.14"
    assert fmt_ratio(31.44) == "31.4x"
    assert fmt_ratio(123.4) == "123x"
    assert fmt_ratio(float("inf")) == "–"
