"""``wordpress-post``: keep a WordPress post or page up to date with the message's values.

Each message renders the configured templates (sandboxed Jinja2, autoescaped) and
upserts the post by slug through the ``wordpress`` connection. Writing happens in the
background, one writer per slug: while WordPress is down or slow the update is retried
with backoff, and a newer message for the same slug replaces the waiting one, so the
site ends up with the latest content and never with an older one written last. A
message is acknowledged only once WordPress stored its content (or a newer one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from engine.errors import ConfigError, MessageError
from engine.message import Message
from engine.node import Node
from engine.paths import get_msg
from engine.types import Duration, connection_field
from wordpress_sync.client import FeaturedImage, RetryPolicy, UpsertResult
from wordpress_sync.connection import PostSettings, WordPressConnection, compile_settings, render_spec


class WordPressPostConfig(PostSettings):
    """Upsert a post or page by slug; every text field is a Jinja2 template filled from the message.

    Template variables: ``payload``, ``topic``, every ``meta`` key and ``msg``. Values are
    HTML-escaped (autoescape). German formatting: ``{{ v|de_number(1) }}`` → ``12,5``,
    ``{{ v|de_unit("°C", 1) }}`` → ``12,5 °C``, ``{{ t|de_datetime }}`` → ``15.08.2024 14:30``
    (Europe/Berlin; epoch s/ms/ns or ISO). ``{{ grafana_panel(url) }}`` embeds a Grafana
    panel (``klimaflow grafana embeds`` lists the URLs) as a Gutenberg Custom HTML block.
    """

    server: str = connection_field("wordpress", "Name of the `wordpress` connection.")
    featured_image_property: str | None = Field(
        default=None,
        description="Message property holding the featured image as bytes (or a file path); overrides `featured_image`.",
    )
    featured_image_name: str = Field(
        default="bild.png",
        description="File name for image bytes from the message (its extension sets the type).",
    )
    retry_initial: Duration = Field(
        default=1.0, description="First wait before retrying when WordPress is down."
    )
    retry_max: Duration = Field(default=60.0, description="Longest wait between retries (the wait doubles).")
    give_up_after: Duration | None = Field(
        default=None,
        description="Stop retrying after this long and send the message to `error` (default: retry until written).",
    )


class WordPressPostNode(Node):
    """Create or update a WordPress post/page by slug from a Jinja2 template; sends id, link and action."""

    type_name = "wordpress-post"
    category = "network"
    Config = WordPressPostConfig
    outputs = ("out",)
    color = "#9ec5e0"
    icon = "wordpress"
    config: WordPressPostConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._futures: set[asyncio.Future[UpsertResult]] = set()
        c = self.config
        self._retry = RetryPolicy(initial=c.retry_initial, maximum=c.retry_max, give_up_after=c.give_up_after)

    async def start(self) -> None:
        try:
            self._templates = compile_settings(self.config)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        conn = self.ctx.connection(self.config.server)
        assert isinstance(conn, WordPressConnection)
        self.conn = conn

    def _image(self, msg: Message) -> FeaturedImage | None:
        prop = self.config.featured_image_property
        if prop is None:
            return None
        value = get_msg(msg, prop)
        if isinstance(value, bytes | bytearray):
            return FeaturedImage(bytes(value), self.config.featured_image_name)
        if isinstance(value, str):
            try:
                with open(value, "rb") as fh:
                    return FeaturedImage(fh.read(), value.rsplit("/", 1)[-1])
            except OSError as exc:
                raise MessageError(f"featured image {value}: {exc.strerror or exc}") from None
        raise MessageError(
            f"property {prop!r} must hold image bytes or a file path, not {type(value).__name__}"
        )

    async def on_message(self, msg: Message) -> None:
        view = msg.to_dict()
        spec = render_spec(self.config, self._templates, {**view, "msg": view}, image=self._image(msg))
        self.hold(msg)  # acknowledged only once WordPress stored it (see _report)
        future = self.conn.coalescer(self._retry).submit(spec)
        self._futures.add(future)
        self.ctx.spawn(self._report(msg, future), f"upsert:{spec.slug}")

    async def _report(self, msg: Message, future: asyncio.Future[UpsertResult]) -> None:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            raise  # stopped before WordPress had it: deliberately not acknowledged
        except Exception as exc:
            self.status("error", f"{type(exc).__name__}: {exc}"[:120])
            await self.emit_error(msg, exc)
            msg.release(ok=False)
            return
        finally:
            self._futures.discard(future)
        if result.superseded:
            self.log.debug("update of %s %r superseded by a newer one", result.kind, result.slug)
        else:
            self.status("ok", f"{result.action} {result.kind} {result.id}")
            out = msg.derive(result.to_dict())
            await self.emit(out)
            out.release()
        msg.release()

    async def stop(self) -> None:
        """Let pending writes finish, unless WordPress is unreachable: then stop at once.

        Updates not written by then stay unacknowledged, so their sources deliver them again.
        """
        if not self._futures:
            return
        coalescer = self.conn.coalescer(self._retry)
        while self._futures:
            if coalescer.stalled:
                self.log.warning(
                    "WordPress is unreachable: %d update(s) not written; their messages stay unacknowledged",
                    len(self._futures),
                )
                return
            await asyncio.wait(list(self._futures), timeout=0.05)
