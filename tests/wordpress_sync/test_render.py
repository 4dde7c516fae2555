"""Template rendering: German formatting, escaping of values, the Grafana panel block."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.errors import ExpressionError
from grafana_provisioning.provision import embeds, generate
from tests.grafana_provisioning.helpers import flow_doc, validated, write_registry
from wordpress_sync.render import (
    compile_template,
    de_datetime,
    de_unit,
    grafana_panel,
    grafana_url,
    render,
    slugify,
)


def fill(source: str, **context: object) -> str:
    return render(compile_template(source), dict(context))


def test_decimal_comma_and_units() -> None:
    assert fill("{{ v|de_number(1) }}", v=12.45) == "12,5"
    assert fill("{{ v|de_number(2) }}", v=1234.5) == "1.234,50"
    assert fill('{{ v|de_unit("°C", 1) }}', v=21.349) == "21,3\u00a0°C"
    assert de_unit(450, "µS/cm") == "450\u00a0µS/cm"
    assert de_unit(None, "%") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1723732200, "15.08.2024 16:30"),  # seconds, summer time (UTC+2)
        (1723732200000, "15.08.2024 16:30"),  # ms
        (1723732200000000000, "15.08.2024 16:30"),  # ns, as readings carry it
        ("2024-01-15T10:00:00Z", "15.01.2024 11:00"),  # winter time (UTC+1)
        ("2024-01-15T10:00:00", "15.01.2024 11:00"),  # no offset: UTC
        (dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC), "31.03.2024 03:30"),  # after the switch
        ("2024-08-15", "15.08.2024"),  # a calendar day is not shifted
    ],
)
def test_de_datetime_is_berlin_time(value: object, expected: str) -> None:
    assert de_datetime(value) == expected


def test_values_are_escaped_but_template_markup_is_kept() -> None:
    out = fill("<p>{{ station }}: {{ v }}</p>", station="<script>alert(1)</script>", v="a & b")
    assert out == "<p>&lt;script&gt;alert(1)&lt;/script&gt;: a &amp; b</p>"


def test_grafana_panel_is_a_custom_html_block() -> None:
    url = grafana_url("https://grafana.example.de/", "klima-abc", 3, "bodenfeuchte")
    assert url == (
        "https://grafana.example.de/d-solo/klima-abc/bodenfeuchte"
        "?orgId=1&panelId=3&from=now-7d&to=now&theme=light"
    )
    assert fill("{{ grafana_panel(u, height=300, title='Boden') }}", u=url) == (
        "<!-- wp:html -->\n"
        '<iframe src="https://grafana.example.de/d-solo/klima-abc/bodenfeuchte'
        '?orgId=1&amp;panelId=3&amp;from=now-7d&amp;to=now&amp;theme=light" width="100%" height="300" '
        'title="Boden" frameborder="0" loading="lazy"></iframe>\n'
        "<!-- /wp:html -->"
    )
    # a URL from a message cannot break out of the attribute or run script
    assert '"><script>' not in str(grafana_panel('https://g.example/"><script>x</script>'))
    with pytest.raises(
        ExpressionError, match=r"grafana_panel needs an http\(s\) URL, got 'javascript:alert\(1\)'"
    ):
        fill("{{ grafana_panel(u) }}", u="javascript:alert(1)")


def test_missing_variable_and_sandbox_are_errors() -> None:
    with pytest.raises(ExpressionError, match="content render failed: 'nope' is undefined"):
        render(compile_template("{{ nope }}"), {}, "content")
    with pytest.raises(ExpressionError, match="access to attribute '__class__'"):
        fill("{{ v.__class__ }}", v=1)
    with pytest.raises(ValueError, match="template syntax error on line 1"):
        compile_template("{{ v ")


def test_slugify_transliterates_german() -> None:
    assert slugify("Bodenfeuchte Größe am Marktplatz (Süd)") == "bodenfeuchte-groesse-am-marktplatz-sued"
    assert slugify("  ---  ") == ""


def test_grafana_url_is_the_format_klimaflow_grafana_embeds_prints(tmp_path: Path) -> None:
    doc = flow_doc(write_registry(tmp_path), {"url": "http://influxdb:8086", "database": "klima"})
    dashboards = generate(validated(doc)).dashboards
    listed = embeds(dashboards, base_url="https://grafana.example.de")
    assert len(listed) == 32
    for e in listed:
        slug = e.url.split("?")[0].rsplit("/", 1)[1]
        assert grafana_url("https://grafana.example.de", e.dashboard_uid, e.panel_id, slug) == e.url
        assert f'src="{e.url.replace("&", "&amp;")}"' in grafana_panel(e.url)
