"""The benchmarks' timing summary: medians per candidate and the spread of paired ratios."""

from benchmarks.common import Timings, report_ratio


def test_medians_and_the_interquartile_range_of_paired_ratios(capsys):
    t = Timings({"a": [1.0, 4.0, 3.0, 2.0, 5.0], "b": [1.0, 2.0, 1.0, 1.0, 1.0]})
    assert t["a"] == 3.0 and t["b"] == 1.0
    # per-repeat ratios 1, 2, 3, 2, 5 → sorted 1, 2, 2, 3, 5: quartiles (inclusive) 2 and 3
    assert t.spread("a", "b") == (2.0, 3.0)
    line = report_ratio("a / b", 3.0, "<= 2", False, t.spread("a", "b"))
    assert "MISS" in line and "[IQR 2.000–3.000]" in line and line in capsys.readouterr().out
