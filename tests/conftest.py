"""Fixtures for real services, usable by every test: each starts its own instance on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.mosquitto import Mosquitto
from tests.services.tls import HAVE_OPENSSL, make_ca_and_server_cert


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh Mosquitto (no persistence) for one test."""
    broker = Mosquitto().start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def mosquitto_persistent() -> Iterator[Mosquitto]:
    """A Mosquitto with on-disk persistence, for persistent-session and restart tests."""
    broker = Mosquitto(persistence=True).start()
    try:
        yield broker
    finally:
        broker.cleanup()


#: The login of :func:`tls_broker` (anonymous clients are refused there).
TLS_BROKER_USER = ("sensor-reader", "s3cret pass")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """A Mosquitto over TLS with a login (:data:`TLS_BROKER_USER`); yields it and its CA file."""
    if not HAVE_OPENSSL:
        pytest.skip("openssl is not installed")
    certs = tmp_path / "broker-certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs)
    broker = Mosquitto(tls=(ca, cert, key), users=dict([TLS_BROKER_USER])).start()
    try:
        yield broker, ca
    finally:
        broker.cleanup()


# -- InfluxDB (owned by the InfluxDB nodes' tests) ---------------------------------------------

from tests.services.influx2_fake import InfluxV2Fake  # noqa: E402
from tests.services.influxdb import InfluxDB  # noqa: E402


@pytest.fixture
def influxdb() -> Iterator[InfluxDB]:
    """A fresh influxd 1.6.7 with an empty database ``klima``; ``restart()`` keeps its data."""
    server = InfluxDB().start()
    try:
        server.create_database("klima")
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def influx2_fake() -> Iterator[InfluxV2Fake]:
    """A loopback server answering like InfluxDB 2.x's write/query API, recording requests."""
    fake = InfluxV2Fake().start()
    try:
        yield fake
    finally:
        fake.stop()


# -- WordPress (owned by the WordPress sync tests, issue 7) -------------------------------------

from tests.services.wordpress import WordPress  # noqa: E402


@pytest.fixture(scope="session")
def wordpress() -> Iterator[WordPress]:
    """One installed WordPress 6.1 + MariaDB for the session (installing takes seconds to ~30 s).

    Users ``administrator``, ``editor``, ``author`` and ``subscriber`` have application
    passwords (``wordpress.users``). Tests use their own slugs; ``stop_web()`` /
    ``start_web()`` cut only the PHP server, the data stays.
    """
    site = WordPress().start()
    try:
        yield site
    finally:
        site.cleanup()
