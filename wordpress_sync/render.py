"""Post content from Jinja2 templates, formatted for German readers and safe for a website.

The environment is Jinja2's immutable sandbox with **autoescape on**: every value that
comes from a sensor, a file or a query is HTML-escaped when inserted, so a reading that
contains ``<script>`` is shown as text and never runs on the town's website. Markup the
template author writes literally, and the output of :func:`grafana_panel`, is kept.

Filters and globals (see docs/wordpress.md):

``de_number(decimals=None)``   ``12.5`` → ``12,5``; ``1234.5`` → ``1.234,5``
``de_unit(unit, decimals=None)`` ``12.5|de_unit("°C", 1)`` → ``12,5 °C`` (no-break space)
``de_datetime(fmt=..., tz="Europe/Berlin")`` epoch s/ms/µs/ns, ISO text or datetime → local time
``grafana_panel(url, height=400, title=...)`` a Grafana panel as a Gutenberg Custom HTML block
``grafana_url(base, uid, panel_id, ...)`` the ``/d-solo/`` embed URL ``klimaflow grafana embeds`` prints
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from engine.errors import ExpressionError
from nodes.template import de_number

BERLIN = "Europe/Berlin"
NBSP = "\u00a0"
DEFAULT_DATETIME_FORMAT = "%d.%m.%Y %H:%M"


def de_unit(value: Any, unit: str, decimals: int | None = None) -> str:
    """A number with its unit, German style: ``12,5 °C``, ``45 %`` (DIN 5008: a space before both)."""
    if value is None:
        return ""
    return f"{de_number(value, decimals)}{NBSP}{unit}"


def _to_datetime(value: Any) -> dt.datetime | dt.date:
    if isinstance(value, bool):
        raise TypeError("de_datetime needs a timestamp, got bool")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text) if "." in text else int(text)
        except ValueError:
            if len(text) == 10:
                return dt.date.fromisoformat(text)
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(value, int | float):
        # Readings carry nanoseconds (InfluxDB's default); queries may give ms or s.
        magnitude = abs(value)
        divisor = 1e9 if magnitude >= 1e17 else 1e6 if magnitude >= 1e14 else 1e3 if magnitude >= 1e11 else 1
        return dt.datetime.fromtimestamp(value / divisor, tz=dt.UTC)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"de_datetime needs a timestamp, got {type(value).__name__}")


def de_datetime(value: Any, fmt: str = DEFAULT_DATETIME_FORMAT, tz: str = BERLIN) -> str:
    """Local (Berlin) time of an epoch (s, ms, µs or ns, told apart by size), ISO text or datetime.

    Values without an offset are UTC, as InfluxDB returns them; a plain date is not shifted.
    """
    if value is None:
        return ""
    moment = _to_datetime(value)
    if isinstance(moment, dt.datetime):
        return moment.astimezone(ZoneInfo(tz)).strftime(fmt)
    return moment.strftime("%d.%m.%Y" if fmt == DEFAULT_DATETIME_FORMAT else fmt)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"grafana_panel needs an http(s) URL, got {url!r}")
    return url


def grafana_url(
    base_url: str,
    uid: str,
    panel_id: int,
    slug: str = "",
    *,
    org_id: int = 1,
    time_from: str = "now-7d",
    time_to: str = "now",
    theme: str = "light",
) -> str:
    """The solo-panel URL, in the format of :func:`grafana_provisioning.provision.embeds`."""
    query = urlencode(
        {"orgId": org_id, "panelId": panel_id, "from": time_from, "to": time_to, "theme": theme}
    )
    return f"{base_url.rstrip('/')}/d-solo/{uid}/{slug or uid}?{query}"


def grafana_panel(
    url: str, height: int = 400, title: str = "Grafana-Diagramm", width: str = "100%"
) -> Markup:
    """A Grafana panel as a Gutenberg *Custom HTML* block (``<!-- wp:html -->``) holding an iframe.

    Custom HTML rather than ``wp:embed``: WordPress has no oEmbed provider for Grafana, so
    an embed block would show a bare link; the HTML block is kept verbatim by the block
    editor, so editors can change the text around it without the block turning "invalid".
    """
    src = _check_url(str(url))
    iframe = Markup(
        '<iframe src="{}" width="{}" height="{}" title="{}" frameborder="0" loading="lazy"></iframe>'
    ).format(src, width, int(height), title)
    return Markup("<!-- wp:html -->\n") + iframe + Markup("\n<!-- /wp:html -->")


def make_environment() -> ImmutableSandboxedEnvironment:
    """Sandboxed, autoescaping, strict: a typo in a variable name is an error, not a blank."""
    env = ImmutableSandboxedEnvironment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["de_number"] = de_number
    env.filters["de_unit"] = de_unit
    env.filters["de_datetime"] = de_datetime
    env.filters["grafana_panel"] = grafana_panel
    env.globals["grafana_panel"] = grafana_panel
    env.globals["grafana_url"] = grafana_url
    return env


_ENV = make_environment()
_PLAIN_ENV = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def compile_template(source: str, *, html: bool = True) -> jinja2.Template:
    """Compile once (config validation and start); raises ``ValueError`` with the line on syntax errors."""
    try:
        return (_ENV if html else _PLAIN_ENV).from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None


def render(template: jinja2.Template, context: dict[str, Any], what: str = "template") -> str:
    """Render; any failure becomes an :class:`ExpressionError` naming ``what`` and the reason."""
    try:
        return template.render(context).strip()
    except Exception as exc:
        detail = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
        raise ExpressionError(f"{what} render failed: {detail}") from exc


_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"})


def slugify(text: str) -> str:
    """A WordPress-style slug: German umlauts transliterated, lowercase ``a-z0-9`` and dashes.

    Computed here rather than left to WordPress, so the slug looked up is exactly the one
    stored, whatever the site's language (``ä`` becomes ``ae`` only on German sites).
    """
    ascii_text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def html_escape(text: str) -> str:
    return str(escape(text))
