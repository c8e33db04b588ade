"""Percentiles and the rolling request statistics of /diagnostics."""
from lisa_ros.core.stats import RequestStats, median_p95, percentiles
from lisa_ros.core.types import Status


def test_stats_percentiles_and_counts():
    stats = RequestStats(window=3)
    assert stats.percentiles("total") is None
    for value in (10, 20, 30, 40):
        stats.record(Status.OK, total=value)
    stats.record(Status.BUSY, total=1)
    assert stats.percentiles("total")[50] == 30.0
    assert stats.counts() == {"OK": 4, "BUSY": 1}


def test_percentiles_are_none_without_values_and_numpy_s_otherwise():
    assert percentiles([]) is None and median_p95([]) == {"median": None, "p95": None}
    values = [10.0, 20.0, 40.0, 50.0]
    assert percentiles(values, (50, 95)) == {50: 30.0, 95: 48.5}
    assert percentiles(values, (95,), method="nearest") == {95: 50.0}
    assert median_p95(values) == {"median": 30.0, "p95": 48.5}
    assert median_p95([0.123456], digits=4) == {"median": 0.1235, "p95": 0.1235}
