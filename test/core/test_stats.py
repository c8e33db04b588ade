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


def test_phase_means_over_the_window_of_answers_only():
    stats = RequestStats(window=2)
    assert stats.phase_means() == {}
    stats.record(Status.OK, {"clip": 100.0, "total": 300.0}, total=1)
    stats.record(Status.NOT_FOUND, {"clip": 0.0, "total": 100.0, "decode": 5.0}, total=1)
    stats.record(Status.OK, {"clip": 20.0, "total": 200.0}, total=1)  # the first leaves the window
    stats.record(Status.TIMEOUT, {"clip": 999.0}, total=1)  # not an answer: not counted
    assert stats.phase_means() == {"clip": 10.0, "total": 150.0, "decode": 5.0}
