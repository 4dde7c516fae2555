"""Grafana's InfluxQL macro and variable expansion, as the query tests rely on it."""

from __future__ import annotations

from grafana_provisioning.macros import escape_regex, expand_influxql


def test_escape_regex_escapes_what_grafana_escapes() -> None:
    assert escape_regex("Wiese/Weide (Nord).1") == r"Wiese\/Weide \(Nord\)\.1"
    assert escape_regex("eui-a84041") == "eui-a84041"


def test_time_filter_interval_and_variables() -> None:
    query = (
        'SELECT mean("x") FROM "m" WHERE "device_id" =~ /^$device$/ AND "location" =~ /^${location}$/ '
        'AND "land_use" =~ /^$land_use$/ AND $timeFilter GROUP BY time($__interval) -- $__interval_ms $other'
    )
    got = expand_influxql(
        query,
        from_ms=1000,
        to_ms=2000,
        interval="5m",
        variables={"device": ["a.b", "c"], "location": ["Bad Belzig"], "land_use": None},
    )
    assert got == (
        'SELECT mean("x") FROM "m" WHERE "device_id" =~ /^(a\\.b|c)$/ AND "location" =~ /^Bad Belzig$/ '
        'AND "land_use" =~ /^.*$/ AND time >= 1000ms and time <= 2000ms GROUP BY time(5m) -- 300000 $other'
    )
