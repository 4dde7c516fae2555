"""``klimaflow wordpress push FILE.yaml [--dry-run]`` against the real WordPress."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.services.wordpress import WordPress
from tests.wordpress_sync.helpers import PNG, new_slug

TEMPLATE = """\
<!-- wp:paragraph -->
<p>Bodenfeuchte am {{ station }}: {{ moisture|de_unit("%", 1) }} (Stand {{ time|de_datetime }})</p>
<!-- /wp:paragraph -->
{{ grafana_panel(panel) }}
"""


def write_push_file(tmp_path: Path, slug: str, **extra: str) -> Path:
    (tmp_path / "seite.html.j2").write_text(TEMPLATE, encoding="utf-8")
    file = tmp_path / "push.yaml"
    lines = [
        "connection:",
        "  url: ${WP_URL}",
        "  username: ${WP_USER}",
        "  password: ${file:wp-password}",
        f"slug: {slug}",
        "post_type: page",
        'title: "Bodenfeuchte {{ station }}"',
        "template_file: seite.html.j2",
        "data:",
        '  station: "Marktplatz <Süd>"',
        "  moisture: 23.456",
        "  time: 1723732200000000000",
        "  panel: https://grafana.example.de/d-solo/klima-boden/bodenfeuchte?orgId=1&panelId=2",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def klimaflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


EXPECTED_CONTENT = (
    "<!-- wp:paragraph -->\n"
    "<p>Bodenfeuchte am Marktplatz &lt;Süd&gt;: 23,5\u00a0% (Stand 15.08.2024 16:30)</p>\n"
    "<!-- /wp:paragraph -->\n"
    "<!-- wp:html -->\n"
    '<iframe src="https://grafana.example.de/d-solo/klima-boden/bodenfeuchte?orgId=1&amp;panelId=2" '
    'width="100%" height="400" title="Grafana-Diagramm" frameborder="0" loading="lazy"></iframe>\n'
    "<!-- /wp:html -->"
)


def test_dry_run_prints_the_rendered_page_and_needs_no_credentials(tmp_path: Path) -> None:
    file = write_push_file(tmp_path, "Bodenfeuchte Marktplatz")
    done = klimaflow("wordpress", "push", "--dry-run", str(file))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "slug: bodenfeuchte-marktplatz\ntype: page\nstatus: publish\n"
        "title: Bodenfeuchte Marktplatz &lt;Süd&gt;\n\n" + EXPECTED_CONTENT + "\n"
    )


def test_push_creates_then_updates_the_page(wordpress: WordPress, tmp_path: Path) -> None:
    slug = new_slug("cli")
    file = write_push_file(tmp_path, slug, featured_image="bilder/karte.png")
    (tmp_path / "bilder").mkdir()
    (tmp_path / "bilder" / "karte.png").write_bytes(PNG)
    (tmp_path / "wp-password").write_text(wordpress.users["editor"].app_password + "\n")
    env = {"WP_URL": wordpress.url, "WP_USER": "editor"}
    first = klimaflow("wordpress", "push", str(file), env=env)
    assert first.returncode == 0, first.stderr
    [page] = wordpress.posts(slug, "pages")
    assert first.stdout == f"created\tpage\t{page['id']}\t{wordpress.url}/{slug}/\n"
    assert page["content"]["raw"] == EXPECTED_CONTENT
    media = wordpress.api("GET", f"/wp/v2/media/{page['featured_media']}", params={"context": "edit"})
    assert media["source_url"].endswith("/karte.png")
    again = klimaflow("wordpress", "push", str(file), env=env)
    assert again.stdout == f"unchanged\tpage\t{page['id']}\t{wordpress.url}/{slug}/\n"


def test_push_reports_wrong_credentials_and_missing_settings_in_one_line(
    wordpress: WordPress, tmp_path: Path
) -> None:
    file = write_push_file(tmp_path, new_slug("cli"))
    (tmp_path / "wp-password").write_text("falsch")
    done = klimaflow("wordpress", "push", str(file), env={"WP_URL": wordpress.url, "WP_USER": "editor"})
    assert done.returncode == 1
    assert done.stderr.startswith(
        "klimaflow: error: WordPress answered 401 rest_not_logged_in: You are not currently logged in. "
        "— it treats the request as anonymous, so user 'editor' was not logged in"
    )
    assert done.stderr.count("\n") == 1
    env = {k: v for k, v in os.environ.items() if k not in ("WP_URL", "WP_USER")}
    missing = subprocess.run(
        [sys.executable, "-m", "engine", "wordpress", "push", str(file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (missing.returncode, missing.stderr) == (
        1,
        f"klimaflow: error: {file}: connection: environment variable WP_URL is not set "
        "(write ${WP_URL:-default} for a default)\n",
    )
