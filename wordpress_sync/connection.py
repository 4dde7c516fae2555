"""The ``wordpress`` connection and the post settings shared by the node and ``klimaflow wordpress push``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from pydantic import Field, SecretStr, field_validator, model_validator

from engine.errors import MessageError
from engine.node import Connection
from engine.types import ConnectionConfig, Duration, NodeConfig
from wordpress_sync.client import (
    FeaturedImage,
    PostKind,
    PostSpec,
    PostStatus,
    RetryPolicy,
    SlugCoalescer,
    WordPressClient,
)
from wordpress_sync.render import compile_template, render, slugify


class WordPressConfig(ConnectionConfig):
    """A WordPress site and the user klimaflow writes as, with an Application Password.

    Create the password in WordPress under Users → Profile → Application Passwords. The
    user needs a role that may publish what the flows write (editor or administrator for
    pages and embedded Grafana panels: authors lose every ``<iframe>``).
    """

    url: str = Field(
        description="The site's address, e.g. `https://klima.example.de` (REST API under `/wp-json`)."
    )
    username: str = Field(description="WordPress user name (login) the Application Password belongs to.")
    password: SecretStr = Field(
        description="The Application Password (spaces allowed); `${ENV}` or `${file:...}` only."
    )
    timeout: Duration = Field(default=30.0, description="Timeout of one HTTP request.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value.rstrip("/")

    def client(self, retry: RetryPolicy | None = None) -> WordPressClient:
        return WordPressClient(
            self.url, self.username, self.password.get_secret_value(), timeout=self.timeout, retry=retry
        )


class WordPressConnection(Connection):
    """A WordPress site (REST API, Application Password); one HTTP pool and one writer per slug."""

    type_name = "wordpress"
    Config = WordPressConfig
    config: WordPressConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: WordPressClient | None = None
        self._coalescers: dict[RetryPolicy, SlugCoalescer] = {}

    @property
    def client(self) -> WordPressClient:
        if self._client is None:
            self._client = self.config.client()
        return self._client

    def coalescer(self, retry: RetryPolicy) -> SlugCoalescer:
        """Shared by every node with this retry policy, so two nodes writing one slug also coalesce."""
        if retry not in self._coalescers:
            self._coalescers[retry] = SlugCoalescer(self.client, retry)
        return self._coalescers[retry]

    async def stop(self) -> None:
        for c in self._coalescers.values():
            await c.cancel()
        self._coalescers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _check_template(value: str | None, html: bool = True) -> str | None:
    if value is not None:
        compile_template(value, html=html)
    return value


class PostSettings(NodeConfig):
    """What to write: the post's slug, texts (Jinja2 templates), status and taxonomy."""

    slug: str = Field(
        description="Identifies the post: the same slug always updates the same post. A template is allowed "
        "(`messwerte-{{ payload.station }}`); the result is made a slug (lowercase, `ä` → `ae`)."
    )
    post_type: PostKind = Field(
        default="post",
        description="Write a `post` or a `page` (not `type`: in a flow file that names the node type).",
    )
    title: str = Field(description="Title; a template (values are HTML-escaped).")
    template: str | None = Field(
        default=None,
        description="Content: a Jinja2 template (autoescaped; filters `de_number`, `de_unit`, `de_datetime`, "
        "`grafana_panel`). Give this or `template_file`.",
    )
    template_file: str | None = Field(
        default=None, description="Content template read from this file (relative to the working directory)."
    )
    excerpt: str | None = Field(default=None, description="Excerpt; a template.")
    status: PostStatus = Field(default="publish", description="`publish`, `draft`, `private` or `pending`.")
    categories: list[str] = Field(
        default_factory=list, description="Category names; created if missing (posts only)."
    )
    tags: list[str] = Field(default_factory=list, description="Tag names; created if missing (posts only).")
    author: int | str | None = Field(
        default=None, description="Author as user id or user slug (default: the connection's user)."
    )
    featured_image: str | None = Field(
        default=None, description="Featured image file path (a template); uploaded once to the media library."
    )

    @field_validator("title", "excerpt", "template")
    @classmethod
    def _compile_html(cls, value: str | None) -> str | None:
        return _check_template(value)

    @field_validator("slug", "featured_image")
    @classmethod
    def _compile_plain(cls, value: str | None) -> str | None:
        return _check_template(value, html=False)

    @model_validator(mode="after")
    def _one_template(self) -> PostSettings:
        if (self.template is None) == (self.template_file is None):
            raise ValueError("give exactly one of `template` and `template_file`")
        if self.post_type == "page" and (self.categories or self.tags):
            raise ValueError("pages have no categories or tags in WordPress")
        return self

    def content_source(self, base_dir: Path | None = None) -> str:
        """The content template's text (``template`` or the file's content)."""
        if self.template is not None:
            return self.template
        assert self.template_file is not None
        path = Path(self.template_file)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read template_file {path}: {exc.strerror or exc}") from None


def compile_settings(
    settings: PostSettings, base_dir: Path | None = None
) -> dict[str, jinja2.Template | None]:
    """Every template of ``settings`` compiled (``None`` where a field is not set)."""
    content = settings.content_source(base_dir)
    return {
        "slug": compile_template(settings.slug, html=False),
        "title": compile_template(settings.title),
        "content": compile_template(content),
        "excerpt": compile_template(settings.excerpt) if settings.excerpt is not None else None,
        "featured_image": compile_template(settings.featured_image, html=False)
        if settings.featured_image is not None
        else None,
    }


def render_spec(
    settings: PostSettings,
    templates: dict[str, jinja2.Template | None],
    context: dict[str, Any],
    *,
    image: FeaturedImage | None = None,
    base_dir: Path | None = None,
) -> PostSpec:
    """Fill every template from ``context``; render errors are :class:`ExpressionError`.

    A featured image comes from ``image`` (bytes from a message) or the rendered
    ``featured_image`` path; an unreadable file is a :class:`MessageError`.
    """

    def text(name: str) -> str | None:
        template = templates[name]
        return None if template is None else render(template, context, name)

    slug_text = text("slug") or ""
    slug = slugify(slug_text)
    if not slug:
        raise MessageError(f"the slug rendered as {slug_text!r}, which has no letters or digits")
    path = text("featured_image")
    if image is None and path:
        file = Path(path) if base_dir is None else base_dir / path
        try:
            image = FeaturedImage(file.read_bytes(), file.name)
        except OSError as exc:
            raise MessageError(f"featured image {path}: {exc.strerror or exc}") from None
    return PostSpec(
        slug=slug,
        title=text("title") or "",
        content=text("content") or "",
        kind=settings.post_type,
        status=settings.status,
        excerpt=text("excerpt"),
        categories=tuple(settings.categories),
        tags=tuple(settings.tags),
        author=settings.author,
        featured_image=image,
    )
