"""The REST client against a real WordPress 6.1 (tests/services/wordpress.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.services._proc import free_port, port_open
from tests.services.wordpress import WordPress
from tests.wordpress_sync.helpers import FAST_RETRY, PNG, client, new_slug, until
from wordpress_sync.client import FeaturedImage, PostSpec, RetryPolicy, WordPressClient
from wordpress_sync.errors import (
    ContentStripped,
    WordPressAuthError,
    WordPressPermissionError,
    WordPressUnavailable,
)
from wordpress_sync.render import compile_template, grafana_panel, grafana_url, render

PANEL_URL = grafana_url("https://grafana.example.de", "klima-boden", 2, "bodenfeuchte")


async def test_create_then_three_updates_leave_one_post_with_the_last_content(wordpress: WordPress) -> None:
    slug = new_slug()
    async with client(wordpress) as wp:
        actions = []
        for i in range(4):
            result = await wp.upsert(PostSpec(slug=slug, title=f"Stand {i}", content=f"<p>Version {i}</p>"))
            actions.append(result.action)
    assert actions == ["created", "updated", "updated", "updated"]
    [post] = wordpress.posts(slug)
    assert (post["id"], post["title"]["raw"], post["content"]["raw"]) == (
        result.id,
        "Stand 3",
        "<p>Version 3</p>",
    )
    assert result.link == f"{wordpress.url}/{slug}/"
    # the database agrees: one post of that slug, whatever its status
    assert wordpress.count_sql(f"post_name = '{slug}' AND post_type = 'post'") == 1


async def test_unchanged_content_is_not_written_again(wordpress: WordPress) -> None:
    slug = new_slug()
    spec = PostSpec(slug=slug, title="Gleich", content="<p>gleich</p>", status="draft")
    async with client(wordpress) as wp:
        first = await wp.upsert(spec)
        revisions = wordpress.count_sql(f"post_parent = {first.id} AND post_type = 'revision'")
        second = await wp.upsert(spec)
    assert (first.action, second.action, second.id) == ("created", "unchanged", first.id)
    assert wordpress.count_sql(f"post_parent = {first.id} AND post_type = 'revision'") == revisions
    # a draft is found again by its slug (status=any), not created twice
    assert [p["status"] for p in wordpress.posts(slug)] == ["draft"]


async def test_page_with_grafana_panel_keeps_its_iframe_for_an_editor(wordpress: WordPress) -> None:
    slug = new_slug("seite")
    content = render(
        compile_template(
            "<!-- wp:paragraph -->\n<p>Bodenfeuchte</p>\n<!-- /wp:paragraph -->\n{{ panel(u) }}"
        ),
        {"panel": grafana_panel, "u": PANEL_URL},
    )
    async with client(wordpress, "editor") as wp:
        result = await wp.upsert(PostSpec(slug=slug, title="Boden", content=content, kind="page"))
    assert (result.action, result.kind) == ("created", "page")
    [page] = wordpress.posts(slug, "pages")
    assert page["content"]["raw"] == content
    assert (
        '<iframe src="https://grafana.example.de/d-solo/klima-boden/bodenfeuchte?orgId=1&amp;panelId=2'
        in (page["content"]["rendered"])
    )


async def test_an_authors_stripped_iframe_is_reported_not_passed_off_as_success(wordpress: WordPress) -> None:
    slug = new_slug()
    content = f"<p>Regen</p>\n{grafana_panel(PANEL_URL)}"
    async with client(wordpress, "author") as wp:
        with pytest.raises(ContentStripped) as caught:
            await wp.upsert(PostSpec(slug=slug, title="Regen", content=content))
    err = caught.value
    [post] = wordpress.posts(slug)
    assert str(err) == (
        f"WordPress saved post {slug!r} (id {post['id']}) but removed 1 <iframe> from its content: "
        "user 'author' (author) lacks the unfiltered_html capability (authors and contributors never "
        "have it; on multisite only super admins do), so WordPress strips embeds. Publish as an editor "
        "or administrator of a single site"
    )
    assert err.lost == {"iframe": 1}
    assert "<iframe" not in post["content"]["raw"]


async def test_categories_and_tags_are_created_once(wordpress: WordPress) -> None:
    cats, tags = ("Klima Lehnitz", "Bodenfeuchte Süd"), ("Marktplatz Ost",)
    specs = [
        PostSpec(slug=new_slug(), title=f"P{i}", content="<p>x</p>", categories=cats, tags=tags)
        for i in range(3)
    ]
    async with client(wordpress) as wp:  # concurrently, through one client
        results = await asyncio.gather(*(wp.upsert(s) for s in specs))
    async with client(wordpress, "editor") as wp:  # a fresh client (no cache) finds them too
        results.append(
            await wp.upsert(PostSpec(slug=new_slug(), title="P", content="x", categories=cats, tags=tags))
        )
    for taxonomy, names in (("categories", cats), ("tags", tags)):
        for name in names:
            found = [
                t
                for t in wordpress.api("GET", f"/wp/v2/{taxonomy}", params={"search": name})
                if t["name"] == name
            ]
            assert len(found) == 1, f"{taxonomy} {name!r}: {found}"
    posts = [wordpress.api("GET", f"/wp/v2/posts/{r.id}", params={"context": "edit"}) for r in results]
    assert len({tuple(sorted(p["categories"])) for p in posts}) == 1
    assert len({tuple(p["tags"]) for p in posts}) == 1
    assert len(posts[0]["categories"]) == 2


async def test_german_umlauts_and_units_arrive_intact(wordpress: WordPress) -> None:
    slug = new_slug()
    title = "Grundwasser in Bad Belzig: Flurabstand größer, Bäume durstig"
    content = (
        "<p>Außentemperatur 21,3\u00a0°C · Niederschlag 12,5\u00a0l/m² · Grundwasser 3,2\u00a0m³ · "
        "Leitfähigkeit 450\u00a0µS/cm · Bodenfeuchte 23\u00a0% — „Übersicht“ für Straße Nr. ½</p>"
    )
    async with client(wordpress) as wp:
        await wp.upsert(PostSpec(slug=slug, title=title, content=content, excerpt="Größen & Einheiten"))
    [post] = wordpress.posts(slug)
    assert (post["title"]["raw"], post["content"]["raw"], post["excerpt"]["raw"]) == (
        title,
        content,
        "Größen & Einheiten",
    )


async def test_featured_image_is_uploaded_once(wordpress: WordPress) -> None:
    slug = new_slug()
    image = FeaturedImage(PNG, "karte.png")
    async with client(wordpress) as wp:
        first = await wp.upsert(PostSpec(slug=slug, title="Bild", content="x", featured_image=image))
        second = await wp.upsert(PostSpec(slug=slug, title="Bild 2", content="x", featured_image=image))
    [post] = wordpress.posts(slug)
    media = wordpress.api("GET", f"/wp/v2/media/{post['featured_media']}", params={"context": "edit"})
    assert (first.action, second.action) == ("created", "updated")
    assert (media["mime_type"], media["slug"]) == ("image/png", f"kf-{image.digest}")
    assert wordpress.count_sql(f"post_type = 'attachment' AND post_name = 'kf-{image.digest}'") == 1


async def test_wrong_password_says_wordpress_treated_us_as_anonymous(wordpress: WordPress) -> None:
    assert wordpress.users["administrator"].app_password != "abcdEFGHijklMNOPqrstUVWX"
    async with WordPressClient(wordpress.url, "administrator", "abcd EFGH ijkl MNOP qrst UVWX") as wp:
        with pytest.raises(WordPressAuthError) as caught:
            await wp.upsert(PostSpec(slug=new_slug(), title="x", content="x"))
    assert (caught.value.status, caught.value.code) == (401, "rest_not_logged_in")
    assert str(caught.value) == (
        "WordPress answered 401 rest_not_logged_in: You are not currently logged in. — it treats the request "
        "as anonymous, so user 'administrator' was not logged in: the user name or the application password "
        "is wrong (WordPress does not say which; writing as anonymous is refused with 401 rest_cannot_create). "
        "Use an Application Password from Users → Profile, not the login password; WordPress only accepts "
        "them over HTTPS or with WP_ENVIRONMENT_TYPE=local, and some web servers drop the Authorization header"
    )


async def test_missing_capabilities_are_named(wordpress: WordPress) -> None:
    async with client(wordpress, "author") as wp:
        with pytest.raises(WordPressPermissionError, match=r"^user 'author' \(author\) may not edit pages: "):
            await wp.upsert(PostSpec(slug=new_slug(), title="x", content="x", kind="page"))
        with pytest.raises(WordPressPermissionError) as caught:
            await wp.upsert(PostSpec(slug=new_slug(), title="x", content="x", categories=(new_slug("neu"),)))
    assert str(caught.value).startswith("cannot create the category 'neu-")
    assert str(caught.value).endswith(
        "user 'author' (author) lacks the manage_categories capability (WordPress answered 403 "
        "rest_cannot_create); create it in WordPress first or write as an editor or administrator"
    )


async def test_unreachable_wordpress_gives_up_after_the_retry_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with WordPressClient(
        url, "a", "b", retry=RetryPolicy(initial=0.05, maximum=0.1, give_up_after=0.3)
    ) as wp:
        with pytest.raises(
            WordPressUnavailable, match=rf"^cannot reach WordPress at {url}: .*; gave up after \d+ attempt"
        ):
            await wp.upsert(PostSpec(slug="x", title="x", content="x"))


async def test_update_while_wordpress_is_down_arrives_after_restart(
    wordpress: WordPress, caplog: pytest.LogCaptureFixture
) -> None:
    slug = new_slug()
    async with client(wordpress, retry=FAST_RETRY) as wp:
        created = await wp.upsert(PostSpec(slug=slug, title="Stand 1", content="<p>1</p>"))
        wordpress.stop_web()
        try:
            with caplog.at_level(logging.WARNING, logger="klimaflow.wordpress"):
                task = asyncio.create_task(
                    wp.upsert(PostSpec(slug=slug, title="Stand 2", content="<p>2</p>"))
                )
                await until(
                    lambda: sum("retrying post" in r.message for r in caplog.records) >= 2, what="retries"
                )
                assert not task.done()
                assert not port_open(wordpress.port)
        finally:
            wordpress.start_web()
        updated = await asyncio.wait_for(task, 30)
    assert (updated.action, updated.id) == ("updated", created.id)
    [post] = wordpress.posts(slug)
    assert post["content"]["raw"] == "<p>2</p>"


async def test_a_wordpress_that_accepts_but_never_answers_is_retried_then_reported() -> None:
    hung: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # read nothing, answer nothing: a WordPress stuck in PHP

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        retry = RetryPolicy(initial=0.05, maximum=0.1, give_up_after=0.6)
        async with WordPressClient(f"http://127.0.0.1:{port}", "a", "b", timeout=0.2, retry=retry) as wp:
            with pytest.raises(WordPressUnavailable) as caught:
                await wp.upsert(PostSpec(slug="x", title="x", content="x"))
    finally:
        for w in hung:
            w.close()
        server.close()
        await server.wait_closed()
    assert str(caught.value).startswith(
        f"WordPress at http://127.0.0.1:{port} did not answer in time (ReadTimeout); gave up after "
    )
    assert len(hung) >= 2  # it was retried


async def test_author_by_user_slug(wordpress: WordPress) -> None:
    slug = new_slug()
    async with client(wordpress) as wp:
        await wp.upsert(PostSpec(slug=slug, title="x", content="x", author="editor"))
    [post] = wordpress.posts(slug)
    assert post["author"] == wordpress.users["editor"].id
