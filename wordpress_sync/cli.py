"""``klimaflow wordpress push FILE.yaml [--dry-run]``: one upsert from the command line.

The YAML file holds what a ``wordpress-post`` node's config holds (slug, post_type, title,
template or template_file, excerpt, status, categories, tags, author, featured_image),
plus ``connection`` (url, username, password: written as ``${ENV}`` or ``${file:...}``)
and ``data``, the template variables. Relative paths are relative to the YAML file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from pydantic import Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine.envsubst import make_lookup, resolve
from engine.errors import KlimaflowError
from engine.types import Duration
from wordpress_sync.client import RetryPolicy, UpsertResult
from wordpress_sync.connection import PostSettings, WordPressConfig, compile_settings, render_spec


class PushFile(PostSettings):
    """A ``klimaflow wordpress push`` file: a post's settings, where to write it, and its data."""

    connection: dict[str, Any] | None = Field(
        default=None, description="`url`, `username`, `password` (as `${ENV}` / `${file:...}`), `timeout`."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="Template variables (also as `data`).")
    give_up_after: Duration = Field(
        default=60.0, description="Stop retrying an unreachable WordPress after this."
    )


def _fail(message: str) -> click.ClickException:
    """``klimaflow``'s group prints these as one line (``klimaflow: error: ...``), exit code 1."""
    return click.ClickException(message)


def _load(file: Path) -> PushFile:
    try:
        raw = YAML(typ="safe", pure=True).load(file.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise _fail(f"{file}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise _fail(f"{file}: expected a mapping with slug, title, template, connection and data")
    try:
        return PushFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"{file}: {problems}") from None


def _connection(push: PushFile, file: Path) -> WordPressConfig:
    if push.connection is None:
        raise _fail(f"{file}: no `connection` (url, username, password) to push to")
    try:
        resolved = resolve(push.connection, make_lookup(), base_dir=file.parent)
        return WordPressConfig.model_validate(resolved)
    except KlimaflowError as exc:
        raise _fail(f"{file}: connection: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise _fail(f"{file}: connection: {problems}") from None


async def _push(config: WordPressConfig, push: PushFile, spec: Any) -> UpsertResult:
    async with config.client(RetryPolicy(give_up_after=push.give_up_after)) as client:
        return await client.upsert(spec)


@click.group("wordpress")
def wordpress() -> None:
    """WordPress posts and pages filled with live values (see docs/wordpress.md)."""


@wordpress.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only render: print slug, title and content; send nothing.")
def push_cmd(file: Path, dry_run: bool) -> None:
    """Create or update the post FILE describes; prints action, type, id and link."""
    push = _load(file)
    base = file.parent
    try:
        templates = compile_settings(push, base)
        spec = render_spec(push, templates, {**push.data, "data": push.data}, base_dir=base)
    except (ValueError, KlimaflowError) as exc:
        raise _fail(f"{file}: {exc}") from None
    if dry_run:
        click.echo(f"slug: {spec.slug}\ntype: {spec.kind}\nstatus: {spec.status}\ntitle: {spec.title}")
        if spec.excerpt is not None:
            click.echo(f"excerpt: {spec.excerpt}")
        click.echo("")
        click.echo(spec.content)
        return
    config = _connection(push, file)
    try:
        result = asyncio.run(_push(config, push, spec))
    except KlimaflowError as exc:
        raise _fail(str(exc)) from None
    click.echo(f"{result.action}\t{result.kind}\t{result.id}\t{result.link}")
