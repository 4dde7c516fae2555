"""wordpress-post in a real Engine against a real WordPress 6.1 (session fixture ``wordpress``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from engine.message import Delivery, Message
from tests.flowkit import FlowHarness, run_flow, validate_doc
from tests.services.wordpress import WordPress
from tests.wordpress_sync.helpers import PNG, new_slug, until

CONTENT = """\
<!-- wp:paragraph -->
<p>{{ payload.tags.station }}: Bodenfeuchte {{ payload.fields.moisture|de_unit("%", 1) }},
Temperatur {{ payload.fields.temp|de_unit("°C", 1) }}, Stand {{ payload.time|de_datetime }}</p>
<!-- /wp:paragraph -->
"""


def flow(wp: WordPress, role: str = "administrator", **node: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "slug": "messwerte-{{ payload.tags.station }}",
        "title": "Messwerte {{ payload.tags.station }}",
        "template": CONTENT,
        **node,
    }
    return {
        "id": "wp",
        "connections": {
            "site": {"type": "wordpress", "url": wp.url, "username": role, "password": "${WP_PASSWORD}"}
        },
        "nodes": [
            {
                "id": "post",
                "type": "wordpress-post",
                "server": "site",
                **config,
                "wires": {"out": ["done"], "error": ["errors"]},
            },
            {"id": "done", "type": "collect"},
            {"id": "errors", "type": "collect"},
        ],
    }


def env(wp: WordPress, role: str = "administrator") -> dict[str, str]:
    return {"WP_PASSWORD": wp.users[role].app_password}


def reading(station: str, moisture: float, temp: float = 21.25) -> dict[str, Any]:
    return {
        "measurement": "boden",
        "tags": {"station": station},
        "fields": {"moisture": moisture, "temp": temp},
        "time": 1723732200000000000,
    }


async def outputs(h: FlowHarness, port: str, n: int, timeout: float = 30.0) -> list[Message]:
    await until(lambda: len(h.received(port)) >= n, timeout, f"{n} message(s) on {port}")
    return h.received(port)


async def test_updates_one_post_per_slug_and_sends_the_result(wordpress: WordPress, tmp_path: Path) -> None:
    station = new_slug("markt")
    async with run_flow(flow(wordpress), environ=env(wordpress), data_dir=tmp_path) as h:
        for i, moisture in enumerate((20.0, 21.04, 22.5, 23.45)):
            await h.send("post", reading(station, moisture))
            await outputs(h, "done", i + 1)
        assert h.received("errors") == []
        results = h.payloads("done")
    [post] = wordpress.posts(f"messwerte-{station}")
    assert [r["action"] for r in results] == ["created", "updated", "updated", "updated"]
    assert results[-1] == {
        "id": post["id"],
        "link": f"{wordpress.url}/messwerte-{station}/",
        "action": "updated",
        "slug": f"messwerte-{station}",
        "type": "post",
        "status": "publish",
    }
    assert post["title"]["raw"] == f"Messwerte {station}"
    assert post["content"]["raw"] == (
        "<!-- wp:paragraph -->\n"
        f"<p>{station}: Bodenfeuchte 23,5\u00a0%,\nTemperatur 21,3\u00a0°C, Stand 15.08.2024 16:30</p>\n"
        "<!-- /wp:paragraph -->"
    )


async def test_a_reading_with_script_arrives_escaped(wordpress: WordPress, tmp_path: Path) -> None:
    slug = new_slug("xss")
    doc = flow(wordpress, "editor", slug=slug, title="Station {{ payload.tags.station }}", post_type="page")
    evil = reading('<script>alert("x")</script>', 1.0)
    evil["fields"]["temp"] = '<img src=x onerror="alert(1)">'
    doc["nodes"][0]["template"] = "<p>{{ payload.tags.station }} / {{ payload.fields.temp }}</p>"
    async with run_flow(doc, environ=env(wordpress, "editor"), data_dir=tmp_path) as h:
        await h.send("post", evil)
        [done] = await outputs(h, "done", 1)
    [post] = wordpress.posts(slug, "pages")
    assert done.payload["type"] == "page"
    assert post["content"]["raw"] == (
        "<p>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; / &lt;img src=x onerror=&#34;alert(1)&#34;&gt;</p>"
    )
    assert "<script" not in post["content"]["rendered"]
    assert "<img" not in post["content"]["rendered"]
    assert post["title"]["raw"] == "Station &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


async def test_page_with_panel_for_author_goes_to_error_with_the_reason(
    wordpress: WordPress, tmp_path: Path
) -> None:
    slug = new_slug("panel")
    doc = flow(
        wordpress,
        "author",
        slug=slug,
        title="Regen",
        template="<p>Regen</p>\n{{ grafana_panel(payload.panel) }}",
    )
    delivery = Delivery()
    async with run_flow(doc, environ=env(wordpress, "author"), data_dir=tmp_path) as h:
        await h.send("post", {"panel": "https://grafana.example.de/d-solo/a/b?panelId=1"}, delivery=delivery)
        delivery.release()
        [failed] = await outputs(h, "errors", 1)
        await until(lambda: delivery.settled, 5, "settled delivery")
    assert h.received("done") == []
    assert failed.meta["error"]["class"] == "ContentStripped"
    assert "WordPressError" in failed.meta["error"]["classes"]
    assert failed.meta["error"]["message"].startswith(
        f"WordPress saved post {slug!r} (id {wordpress.posts(slug)[0]['id']}) but removed 1 <iframe> from its "
        "content: user 'author' (author) lacks the unfiltered_html capability"
    )


async def test_wrong_password_goes_to_error(wordpress: WordPress, tmp_path: Path) -> None:
    async with run_flow(flow(wordpress), environ={"WP_PASSWORD": "falsch"}, data_dir=tmp_path) as h:
        await h.send("post", reading(new_slug("s"), 1.0))
        [failed] = await outputs(h, "errors", 1)
    assert failed.meta["error"]["class"] == "WordPressAuthError"
    assert failed.meta["error"]["message"].startswith(
        "WordPress answered 401 rest_not_logged_in: You are not currently logged in. — it treats the "
        "request as anonymous, so user 'administrator' was not logged in"
    )


async def test_unrenderable_message_goes_to_error_without_writing(
    wordpress: WordPress, tmp_path: Path
) -> None:
    async with run_flow(flow(wordpress), environ=env(wordpress), data_dir=tmp_path) as h:
        await h.send("post", {"no": "tags"})
        [failed] = await outputs(h, "errors", 1)
    assert failed.meta["error"]["class"] == "ExpressionError"
    assert failed.meta["error"]["message"] == "slug render failed: 'dict object' has no attribute 'tags'"


async def test_down_wordpress_gets_the_latest_update_and_acks_after_storing(
    wordpress: WordPress, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = new_slug("ausfall")
    slug = f"messwerte-{station}"
    doc = flow(wordpress, retry_initial="100ms", retry_max="300ms")
    async with run_flow(doc, environ=env(wordpress), data_dir=tmp_path) as h:
        await h.send("post", reading(station, 10.0))
        [created] = await outputs(h, "done", 1)
        post_id = created.payload["id"]
        wordpress.stop_web()
        deliveries = [Delivery() for _ in range(3)]
        try:
            with caplog.at_level(logging.WARNING, logger="klimaflow.wordpress"):
                await h.send("post", reading(station, 11.0), delivery=deliveries[0])
                await until(lambda: any(slug in r.message for r in caplog.records), what="a retry")
                await h.send("post", reading(station, 12.0), delivery=deliveries[1])
                await h.send("post", reading(station, 13.0), delivery=deliveries[2])
                for d in deliveries:
                    d.release()  # the sender's own reference: only the node's hold is left
                await until(lambda: sum(slug in r.message for r in caplog.records) >= 3, what="retries")
                assert [d.settled for d in deliveries] == [False, False, False]
        finally:
            wordpress.start_web()
        await until(lambda: all(d.settled for d in deliveries), 30, "acknowledgements")
        assert len(h.received("done")) == 2  # superseded updates send nothing
        assert h.received("errors") == []
        last = h.payloads("done")[-1]
    assert (last["id"], last["action"]) == (post_id, "updated")
    [post] = wordpress.posts(slug)
    assert "Bodenfeuchte 13,0\u00a0%" in post["content"]["raw"]
    # 11.0 may have been in flight when WordPress went down; 12.0 was replaced before it was sent
    assert wordpress.count_sql(f"post_parent = {post_id} AND post_content LIKE '%12,0%'") == 0
    assert (
        wordpress.count_sql(f"post_parent = {post_id} AND post_content LIKE '%13,0%'") == 1
    )  # revisions work


def test_literal_password_and_bad_template_are_validation_errors(wordpress: WordPress) -> None:
    doc = flow(wordpress, template="{% if %}")
    doc["connections"]["site"]["password"] = "abcd efgh ijkl"
    validated, issues = validate_doc(doc)
    assert validated is None
    messages = sorted(i.format() for i in issues if i.severity == "error")
    assert any("secrets must not be written into flow files" in m for m in messages), messages
    assert any("template syntax error on line 1" in m for m in messages), messages
    both = flow(wordpress, template_file="seite.j2")
    assert any(
        "give exactly one of `template` and `template_file`" in i.format()
        for i in validate_doc(both, environ=env(wordpress))[1]
    )


async def test_stopping_while_wordpress_is_down_leaves_the_message_unacknowledged(
    wordpress: WordPress, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    station = new_slug("stopp")
    delivery = Delivery()
    wordpress.stop_web()
    try:
        with caplog.at_level(logging.WARNING, logger="klimaflow.wordpress"):
            doc = flow(wordpress, retry_initial="100ms", retry_max="200ms")
            async with run_flow(doc, environ=env(wordpress), data_dir=tmp_path, drain_timeout=0.5) as h:
                await h.send("post", reading(station, 5.0), delivery=delivery)
                delivery.release()
                await until(lambda: any(station in r.message for r in caplog.records), what="a retry")
    finally:
        wordpress.start_web()
    assert not delivery.settled  # the source will deliver it again
    assert h.received("errors") == []
    assert wordpress.posts(f"messwerte-{station}") == []


async def test_featured_image_from_message_bytes(wordpress: WordPress, tmp_path: Path) -> None:
    slug = new_slug("bild")
    doc = flow(
        wordpress,
        slug=slug,
        title="Karte",
        template="<p>Karte</p>",
        featured_image_property="image",
        featured_image_name="Karte Süd.png",
        categories=["Karten"],
        tags=["Bad Belzig"],
        status="draft",
    )
    async with run_flow(doc, environ=env(wordpress), data_dir=tmp_path) as h:
        await h.send("post", None, image=PNG + b"sued")  # bytes of its own: uploaded here
        await h.send("post", None, image="/nonexistent/karte.png")
        [done] = await outputs(h, "done", 1)
        [failed] = await outputs(h, "errors", 1)
    assert (
        failed.meta["error"]["message"] == "featured image /nonexistent/karte.png: No such file or directory"
    )
    [post] = wordpress.posts(slug)
    assert (done.payload["id"], post["status"]) == (post["id"], "draft")
    media = wordpress.api("GET", f"/wp/v2/media/{post['featured_media']}", params={"context": "edit"})
    assert media["mime_type"] == "image/png"
    assert media["source_url"].endswith("/karte-sued.png")  # HTTP headers are ASCII
    names = {t["name"] for t in wordpress.api("GET", "/wp/v2/tags", params={"include": post["tags"]})}
    assert names == {"Bad Belzig"}
