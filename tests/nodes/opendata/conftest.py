"""The `influxdb` fixture with year-long shard groups, as docs/flows/groundwater.md recommends.

Decades of weekly groundwater levels in InfluxDB 1.x's default retention policy (7-day shard
groups) create over a thousand shards: same points, but seconds of setup and teardown per test.
"""

from __future__ import annotations

import pytest

from tests.nodes.opendata.helpers import long_shards
from tests.services.influxdb import InfluxDB


@pytest.fixture
def influxdb(influxdb: InfluxDB) -> InfluxDB:
    long_shards(influxdb)
    return influxdb
