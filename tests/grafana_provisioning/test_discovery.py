"""What the flows store, as discovered from a validated deployment."""

from __future__ import annotations

from pathlib import Path

from grafana_provisioning.discovery import discover, unit_for
from tests.grafana_provisioning.helpers import MEASUREMENTS, flow_doc, validated, write_registry

V1 = {"url": "http://influx:8086", "database": "klima"}


def test_ttn_readings_are_found_with_registry_measurements_tags_and_units(tmp_path: Path) -> None:
    [stored] = discover(validated(flow_doc(write_registry(tmp_path), V1)))
    assert (stored.flow_id, stored.node_id, stored.connection) == ("klima", "store", "influx")
    assert stored.influx.version == 1
    assert stored.measurements == sorted(MEASUREMENTS)
    assert stored.tags == ["application", "dev_eui", "device_id", "land_use", "location", "soil_type"]
    assert [g.key for g in stored.groups] == ["boden", "wetter", "funk"]
    units = {f.name: f.unit for g in stored.groups for f in g.fields}
    assert units == {
        "water_SOIL": "percent",
        "temp_SOIL": "celsius",
        "conduct_SOIL": "suffix: µS/cm",
        "TempC_DS18B20": "celsius",
        "Bat": "volt",
        "air_temperature": "celsius",
        "air_humidity": "humidity",
        "barometric_pressure": "suffix: Pa",
        "rain_hourly": "suffix: mm/h",
        "wind_speed": "velocityms",
        "wind_direction": "degree",
        "light_intensity": "lux",
        "uv_index": "none",
        "battery": "percent",
        "rssi": "dBm",
        "snr": "dB",
    }
    assert stored.notes == []


def test_missing_registry_file_keeps_the_uplink_measurement_and_says_so(tmp_path: Path) -> None:
    [stored] = discover(validated(flow_doc(tmp_path / "absent.csv", V1)))
    assert stored.measurements == ["ttn"]
    assert stored.notes == [
        f"registry {tmp_path / 'absent.csv'} not readable: its measurement names are missing"
    ]


def test_map_mode_uses_declared_measurement_fields_and_tags() -> None:
    doc = {
        "id": "pegel",
        "label": "Pegel",
        "connections": {"influx": {"type": "influxdb", **V1}},
        "nodes": [
            {
                "id": "store",
                "type": "influxdb-out",
                "server": "influx",
                "measurement": "wasserstand",
                "tags": {"device_id": "payload.dev"},
                "static_tags": {"location": "Belzig"},
                "fields": {"level": "payload.level", "water_temp": "payload.t", "count": "payload.n"},
            }
        ],
    }
    [stored] = discover(validated(doc))
    assert stored.measurements == ["wasserstand"]
    assert stored.tags == ["device_id", "location"]
    [group] = stored.groups
    assert [(f.name, f.unit) for f in group.fields] == [
        ("level", "lengthm"),
        ("water_temp", "celsius"),
        ("count", "none"),
    ]


def test_units_from_declared_symbols_and_field_names() -> None:
    assert unit_for("x", "°C") == "celsius"
    assert unit_for("x", "kg") == "suffix: kg"
    assert unit_for("soil_moisture") == "percent"
    assert unit_for("BatV") == "volt"
    assert unit_for("Bat") == "volt"
    assert unit_for("air_pressure") == "pressurehpa"
    assert unit_for("f_cnt") == "none"
    assert unit_for("water_temp") == "celsius"
    assert unit_for("water_level") == "lengthm"
