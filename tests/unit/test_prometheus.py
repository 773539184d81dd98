"""The Prometheus text format the agent and the controller serve."""

from __future__ import annotations

from plum.common import prometheus


def test_a_histogram_is_cumulative_with_sum_count_and_inf():
    hist = prometheus.Histogram("lat_seconds", "Latency.", ("route",), (0.01, 0.1))
    for value in (0.005, 0.05, 0.05, 3.0):
        hist.observe(("/v1/x",), value)
    lines = hist.render()
    assert lines[:2] == ["# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram"]
    assert lines[2:] == [
        'lat_seconds_bucket{route="/v1/x",le="0.01"} 1',
        'lat_seconds_bucket{route="/v1/x",le="0.1"} 3',
        'lat_seconds_bucket{route="/v1/x",le="+Inf"} 4',
        'lat_seconds_sum{route="/v1/x"} 3.105',
        'lat_seconds_count{route="/v1/x"} 4',
    ]


def test_a_value_on_a_bucket_bound_counts_in_that_bucket():
    hist = prometheus.Histogram("h", "H.", (), (1.0,))
    hist.observe((), 1.0)
    assert 'h_bucket{le="1"} 1' in hist.render()


def test_label_values_are_escaped_and_families_typed():
    lines = prometheus.family("up", "gauge", "Up.", [({"name": 'a"b\\c\nd'}, 1), ({}, 2.5)])
    assert lines == [
        "# HELP up Up.",
        "# TYPE up gauge",
        'up{name="a\\"b\\\\c\\nd"} 1',
        "up 2.5",
    ]
