"""An async WordPress REST client that upserts one post or page by its slug.

Why it is shaped like this:

* **Idempotent by slug.** The post is looked up by slug with ``status=any`` and
  ``context=edit`` (drafts and private posts included), then updated, or created if
  absent. A retried create whose answer was lost is found by the next lookup; should
  WordPress still have made a second post (it then gets ``slug-2``), the duplicate is
  deleted and the original updated, so one slug always means one post.
* **Unchanged is not written.** WordPress keeps a revision per update; a page refreshed
  every ten minutes with the same values would collect thousands. Fields equal to what
  is stored are not sent, and a post with nothing to change is not touched.
* **Terms by name, created once.** Category and tag ids are looked up by name (cached,
  one lock per taxonomy) and created when missing.
* **Stripped markup is an error.** After saving, the stored ``content.raw`` is compared
  with what was sent; tags WordPress removed (kses strips ``<iframe>`` for users without
  ``unfiltered_html``) raise :class:`ContentStripped` instead of reporting success.
* **Retries** of connection errors, timeouts, 5xx and 429 with exponential backoff, as
  one unit of work (every step is idempotent), until ``RetryPolicy.give_up_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import logging
import mimetypes
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal

import httpx

from wordpress_sync.errors import (
    ContentStripped,
    SlugConflict,
    WordPressAuthError,
    WordPressError,
    WordPressPermissionError,
    WordPressRequestError,
    WordPressUnavailable,
)
from wordpress_sync.render import slugify

log = logging.getLogger("klimaflow.wordpress")

PostKind = Literal["post", "page"]
PostStatus = Literal["draft", "publish", "private", "pending"]
Action = Literal["created", "updated", "unchanged"]

_ENDPOINT = {"post": "posts", "page": "pages"}


@dataclass(frozen=True, slots=True)
class FeaturedImage:
    """Image bytes and the file name WordPress should show (its extension sets the type)."""

    data: bytes
    filename: str
    mime_type: str | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class PostSpec:
    """Everything one upsert writes; ``None`` fields are left as WordPress has them."""

    slug: str
    title: str
    content: str
    kind: PostKind = "post"
    status: PostStatus = "publish"
    excerpt: str | None = None
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    author: int | str | None = None
    featured_image: FeaturedImage | None = None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What WordPress stored: ``action`` is created, updated or unchanged."""

    id: int
    link: str
    action: Action
    slug: str
    kind: PostKind
    status: str
    #: True for an update that a newer one for the same slug replaced before it was sent.
    superseded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "link": self.link,
            "action": self.action,
            "slug": self.slug,
            "type": self.kind,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transient failures; ``give_up_after=None`` retries forever."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    give_up_after: float | None = 300.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)


class Superseded(Exception):
    """A newer update for the same slug arrived while this one waited to retry."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class _TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1


def count_tags(markup: str) -> Counter[str]:
    """How often each HTML start tag occurs (what kses removes shows up as a lower count)."""
    parser = _TagCounter()
    parser.feed(markup)
    parser.close()
    return parser.tags


def lost_tags(sent: str, stored: str) -> dict[str, int]:
    """Tags present in ``sent`` that ``stored`` has fewer of, with how many are missing."""
    before, after = count_tags(sent), count_tags(stored)
    return {tag: n - after[tag] for tag, n in sorted(before.items()) if after[tag] < n}


def _wp_message(response: httpx.Response) -> tuple[str | None, str, Any]:
    """WordPress's error ``code``, ``message`` and ``data`` (or the start of a non-JSON body)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text.strip()[:200] or response.reason_phrase, None
    if isinstance(body, dict):
        return (
            str(body["code"]) if body.get("code") else None,
            html.unescape(str(body.get("message", ""))),
            body.get("data"),
        )
    return None, str(body)[:200], None


class WordPressClient:
    """One site, one user (Application Password); safe for concurrent upserts of different slugs."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=f"{self.url}/wp-json",
            auth=httpx.BasicAuth(username, password.replace(" ", "")),
            timeout=timeout,
            headers={"User-Agent": "klimaflow"},
            transport=transport,
        )
        self._terms: dict[tuple[str, str], int] = {}
        self._term_locks: dict[str, asyncio.Lock] = {}
        self._slug_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._authors: dict[str, int] = {}
        self._me: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> WordPressClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one request ---------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; returns the JSON answer or raises a :class:`WordPressError` / ``_Transient``."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise _Transient(
                f"WordPress at {self.url} did not answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise _Transient(f"cannot reach WordPress at {self.url}: {exc or type(exc).__name__}") from exc
        status = response.status_code
        if status < 300:
            try:
                return response.json()
            except ValueError:
                raise WordPressRequestError(
                    f"{self.url}/wp-json{path} did not answer with JSON: is this a WordPress site with the "
                    "REST API (pretty permalinks) enabled?",
                    status=status,
                ) from None
        code, message, _ = _wp_message(response)
        said = f"{status} {code}: {message}" if code else f"{status}: {message}"
        if status >= 500 or status in (408, 429):
            retry_after = response.headers.get("Retry-After")
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise _Transient(f"WordPress answered {said}", wait)
        if status == 401:
            raise WordPressAuthError(
                f"WordPress answered {said} — it treats the request as anonymous, so user "
                f"{self.username!r} was not logged in: the user name or the application password is wrong "
                "(WordPress does not say which; writing as anonymous is refused with 401 rest_cannot_create). "
                "Use an Application Password from Users → Profile, not the login password; WordPress only "
                "accepts them over HTTPS or with WP_ENVIRONMENT_TYPE=local, and some web servers drop the "
                "Authorization header",
                status=status,
                code=code,
            )
        if status == 403:
            raise WordPressPermissionError(
                f"WordPress answered {said} — user {self.username!r} is logged in but lacks the capability "
                "(e.g. authors cannot edit pages or other users' posts, contributors cannot publish): "
                "give the user a role that may do this",
                status=status,
                code=code,
            )
        raise WordPressRequestError(f"WordPress refused {method} {path}: {said}", status=status, code=code)

    # -- building blocks -----------------------------------------------------------------------

    async def whoami(self) -> dict[str, Any]:
        """The logged-in user (``users/me``): proves the credentials before anything is written.

        Without this, a wrong password shows up as a puzzling ``400 rest_invalid_param``
        on the ``status=any`` lookup, because WordPress quietly treats the request as anonymous.
        """
        if self._me is None:
            self._me = await self.request("GET", "/wp/v2/users/me", params={"context": "edit"})
        return self._me

    def _who(self) -> str:
        roles = ", ".join((self._me or {}).get("roles", [])) or "unknown role"
        return f"user {self.username!r} ({roles})"

    async def find(self, kind: PostKind, slug: str) -> dict[str, Any] | None:
        """The post with this slug in any status but trash (edit context: raw fields), or None."""
        try:
            found = await self.request(
                "GET",
                f"/wp/v2/{_ENDPOINT[kind]}",
                params={"slug": slug, "status": "any", "context": "edit", "per_page": 10},
            )
        except WordPressRequestError as exc:
            if exc.code != "rest_invalid_param":
                raise
            # WordPress rejects status=any for users who may not edit this post type.
            raise WordPressPermissionError(
                f"{self._who()} may not edit {_ENDPOINT[kind]}: WordPress refuses to list their drafts "
                f"({exc.status} {exc.code}); give the user a role that may edit {_ENDPOINT[kind]} "
                "(editor or administrator for pages)",
                status=exc.status,
                code=exc.code,
            ) from None
        exact = [p for p in found if p.get("slug") == slug]
        return min(exact, key=lambda p: int(p["id"])) if exact else None

    async def term_ids(self, taxonomy: Literal["categories", "tags"], names: tuple[str, ...]) -> list[int]:
        """Ids of the named terms, creating missing ones (once, even under concurrent upserts)."""
        ids: list[int] = []
        lock = self._term_locks.setdefault(taxonomy, asyncio.Lock())
        async with lock:
            for name in names:
                key = (taxonomy, name.casefold())
                if key not in self._terms:
                    self._terms[key] = await self._term_id(taxonomy, name)
                ids.append(self._terms[key])
        return ids

    async def _term_id(self, taxonomy: str, name: str) -> int:
        candidates = await self.request(
            "GET", f"/wp/v2/{taxonomy}", params={"search": name, "per_page": 100, "context": "view"}
        )
        for term in candidates:
            if html.unescape(str(term.get("name", ""))).casefold() == name.casefold():
                return int(term["id"])
        try:
            created = await self.request("POST", f"/wp/v2/{taxonomy}", json={"name": name})
        except WordPressPermissionError as exc:
            singular = {"categories": "category", "tags": "tag"}.get(taxonomy, taxonomy)
            raise WordPressPermissionError(
                f"cannot create the {singular} {name!r}: {self._who()} lacks the manage_categories "
                f"capability (WordPress answered {exc.status} {exc.code}); create it in WordPress first "
                "or write as an editor or administrator",
                status=exc.status,
                code=exc.code,
            ) from None
        except WordPressRequestError as exc:
            if exc.code == "term_exists":  # made meanwhile by someone else
                again = await self.request("GET", f"/wp/v2/{taxonomy}", params={"search": name})
                for term in again:
                    if html.unescape(str(term.get("name", ""))).casefold() == name.casefold():
                        return int(term["id"])
            raise
        log.info("created %s %r (id %s)", taxonomy, name, created["id"])
        return int(created["id"])

    async def author_id(self, author: int | str) -> int:
        """A user id from an id or a login/slug (``users?slug=``)."""
        if isinstance(author, int) or author.isdigit():
            return int(author)
        if author not in self._authors:
            users = await self.request("GET", "/wp/v2/users", params={"slug": author})
            if not users:
                raise WordPressRequestError(
                    f"no WordPress user with the slug {author!r} is visible to {self.username!r}: "
                    "give the author's numeric user id instead"
                )
            self._authors[author] = int(users[0]["id"])
        return self._authors[author]

    async def media_id(self, image: FeaturedImage) -> int:
        """The attachment for these bytes, uploaded once (found again by a content-hash slug)."""
        slug = f"kf-{image.digest}"
        found = await self.request("GET", "/wp/v2/media", params={"slug": slug, "context": "edit"})
        if found:
            return int(found[0]["id"])
        mime = image.mime_type or mimetypes.guess_type(image.filename)[0] or "application/octet-stream"
        stem, dot, ext = image.filename.rpartition(".")
        # HTTP headers are ASCII: "Bodenkarte Süd.png" is sent as "bodenkarte-sued.png".
        safe_name = f"{slugify(stem if dot else ext) or 'bild'}{dot}{slugify(ext) if dot else ''}"
        created = await self.request(
            "POST",
            "/wp/v2/media",
            params={"slug": slug, "title": image.filename.rsplit(".", 1)[0]},
            content=image.data,
            headers={"Content-Type": mime, "Content-Disposition": f'attachment; filename="{safe_name}"'},
        )
        return int(created["id"])

    # -- the upsert ----------------------------------------------------------------------------

    async def upsert(
        self,
        spec: PostSpec,
        *,
        retry: RetryPolicy | None = None,
        interrupt: asyncio.Event | None = None,
        on_retry: Callable[[float], None] | None = None,
    ) -> UpsertResult:
        """Create or update the post for ``spec.slug``, retrying transient failures.

        ``interrupt`` set while waiting to retry raises :class:`Superseded`: a newer version
        is waiting, so this one is not worth writing any more. ``on_retry(delay)`` is called
        before each wait.
        """
        policy = retry or self.retry
        started = time.monotonic()
        delays = policy.delays()
        lock = self._slug_locks.setdefault((spec.kind, spec.slug), asyncio.Lock())
        attempt = 0
        while True:
            if interrupt is not None and interrupt.is_set():
                raise Superseded(spec.slug)
            attempt += 1
            try:
                async with lock:
                    return await self._upsert_once(spec)
            except _Transient as exc:
                delay = max(next(delays), exc.retry_after or 0.0)
                waited = time.monotonic() - started
                if policy.give_up_after is not None and waited + delay > policy.give_up_after:
                    raise WordPressUnavailable(
                        f"{exc}; gave up after {attempt} attempt(s) in {waited:.0f}s"
                    ) from exc
                log.warning("%s; retrying %s %r in %.1fs", exc, spec.kind, spec.slug, delay)
                if on_retry is not None:
                    on_retry(delay)
                if interrupt is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(interrupt.wait(), delay)

    async def _fields(self, spec: PostSpec) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "slug": spec.slug,
            "title": spec.title,
            "content": spec.content,
            "status": spec.status,
        }
        if spec.excerpt is not None:
            fields["excerpt"] = spec.excerpt
        if spec.categories:
            fields["categories"] = await self.term_ids("categories", spec.categories)
        if spec.tags:
            fields["tags"] = await self.term_ids("tags", spec.tags)
        if spec.author is not None:
            fields["author"] = await self.author_id(spec.author)
        if spec.featured_image is not None:
            fields["featured_media"] = await self.media_id(spec.featured_image)
        return fields

    @staticmethod
    def _changed(existing: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """The fields whose stored value differs (raw texts, term id sets)."""
        out: dict[str, Any] = {}
        for name, value in fields.items():
            have = existing.get(name)
            if isinstance(have, dict):
                have = have.get("raw")
            if name in ("categories", "tags"):
                if sorted(have or []) != sorted(value):
                    out[name] = value
            elif have != value:
                out[name] = value
        return out

    async def _upsert_once(self, spec: PostSpec) -> UpsertResult:
        endpoint = f"/wp/v2/{_ENDPOINT[spec.kind]}"
        await self.whoami()
        fields = await self._fields(spec)
        existing = await self.find(spec.kind, spec.slug)
        if existing is None:
            saved = await self.request("POST", endpoint, json=fields)
            action: Action = "created"
            if saved.get("slug") != spec.slug:
                saved = await self._resolve_duplicate(spec, saved, fields)
                action = "updated"
        else:
            changes = self._changed(existing, fields)
            if not changes:
                return self._result(existing, "unchanged", spec)
            saved = await self.request("POST", f"{endpoint}/{existing['id']}", json=changes)
            action = "updated"
        self._check_stored(spec, saved)
        return self._result(saved, action, spec)

    async def _resolve_duplicate(
        self, spec: PostSpec, saved: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """A create that came out as ``slug-2``: an earlier (lost-answer) create may own the slug."""
        endpoint = f"/wp/v2/{_ENDPOINT[spec.kind]}"
        original = await self.find(spec.kind, spec.slug)
        if original is None or original["id"] == saved["id"]:
            raise SlugConflict(
                f"WordPress stored the {spec.kind} as {saved.get('slug')!r} (id {saved['id']}) instead of "
                f"{spec.slug!r}: the slug is taken by something the lookup cannot see (a trashed post, "
                "an attachment, another post type); empty the trash or choose another slug"
            )
        await self.request("DELETE", f"{endpoint}/{saved['id']}", params={"force": "true"})
        log.warning(
            "deleted duplicate %s %s (%s) of %r", spec.kind, saved["id"], saved.get("slug"), spec.slug
        )
        result: dict[str, Any] = await self.request("POST", f"{endpoint}/{original['id']}", json=fields)
        return result

    def _check_stored(self, spec: PostSpec, saved: dict[str, Any]) -> None:
        stored = saved.get("content", {}).get("raw")
        if not isinstance(stored, str) or stored == spec.content:
            return
        lost = lost_tags(spec.content, stored)
        if lost:
            what = ", ".join(f"{n} <{tag}>" for tag, n in lost.items())
            raise ContentStripped(
                f"WordPress saved {spec.kind} {spec.slug!r} (id {saved['id']}) but removed {what} from "
                f"its content: {self._who()} lacks the unfiltered_html capability (authors and "
                "contributors never have it; on multisite only super admins do), so WordPress strips "
                "embeds. Publish as an editor or administrator of a single site",
                lost=lost,
                post_id=int(saved["id"]),
                link=str(saved.get("link", "")),
                username=self.username,
            )

    @staticmethod
    def _result(post: dict[str, Any], action: Action, spec: PostSpec) -> UpsertResult:
        return UpsertResult(
            id=int(post["id"]),
            link=str(post.get("link", "")),
            action=action,
            slug=str(post.get("slug", spec.slug)),
            kind=spec.kind,
            status=str(post.get("status", spec.status)),
        )


@dataclass
class _Slot:
    spec: PostSpec
    waiters: list[asyncio.Future[UpsertResult]] = field(default_factory=list)


class SlugCoalescer:
    """At most one write per slug in flight; a newer update replaces an older one still waiting.

    ``submit`` returns a future per update. When a newer update for the same slug comes
    in before an older one was written (WordPress down, retries pending), only the newest
    is written and the older futures resolve with its result marked ``superseded``: the
    site shows the latest values, and no stale version is written after a fresh one.
    """

    def __init__(self, client: WordPressClient, retry: RetryPolicy | None = None) -> None:
        self.client = client
        self.retry = retry
        self._pending: dict[tuple[str, str], _Slot] = {}
        self._interrupt: dict[tuple[str, str], asyncio.Event] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._current: dict[tuple[str, str], _Slot] = {}
        self._backoff_until: dict[tuple[str, str], float] = {}

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    @property
    def stalled(self) -> bool:
        """Every slug still to write is waiting to retry: WordPress is unreachable right now."""
        now = time.monotonic()
        return bool(self._workers) and all(self._backoff_until.get(k, 0.0) > now for k in self._workers)

    def submit(self, spec: PostSpec) -> asyncio.Future[UpsertResult]:
        key = (spec.kind, spec.slug)
        future: asyncio.Future[UpsertResult] = asyncio.get_running_loop().create_future()
        slot = self._pending.get(key)
        if slot is None:
            self._pending[key] = _Slot(spec, [future])
        else:
            slot.spec = spec
            slot.waiters.append(future)
        if key in self._interrupt:
            self._interrupt[key].set()
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._work(key), name=f"wordpress:{spec.kind}:{spec.slug}"
            )
        return future

    async def _work(self, key: tuple[str, str]) -> None:
        try:
            while key in self._pending:
                slot = self._current[key] = self._pending.pop(key)
                interrupt = self._interrupt[key] = asyncio.Event()

                def backoff(delay: float, key: tuple[str, str] = key) -> None:
                    self._backoff_until[key] = time.monotonic() + delay

                try:
                    result = await self.client.upsert(
                        slot.spec, retry=self.retry, interrupt=interrupt, on_retry=backoff
                    )
                except Superseded:
                    newer = self._pending[key]
                    newer.waiters[:0] = slot.waiters
                    continue
                except Exception as exc:
                    for f in slot.waiters:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                *older, latest = slot.waiters
                for f in older:
                    if not f.done():
                        f.set_result(_superseded(result))
                if not latest.done():
                    latest.set_result(result)
        finally:
            self._backoff_until.pop(key, None)
            self._current.pop(key, None)
            self._interrupt.pop(key, None)
            self._workers.pop(key, None)

    async def wait(self) -> None:
        """Until every submitted update was written or failed."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def cancel(self) -> None:
        """Stop working; futures of unwritten updates are cancelled."""
        slots = [*self._current.values(), *self._pending.values()]
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        for slot in slots:
            for f in slot.waiters:
                f.cancel()
        self._pending.clear()


def _superseded(result: UpsertResult) -> UpsertResult:
    return UpsertResult(
        result.id, result.link, result.action, result.slug, result.kind, result.status, superseded=True
    )


__all__ = [
    "FeaturedImage",
    "PostSpec",
    "RetryPolicy",
    "SlugCoalescer",
    "Superseded",
    "UpsertResult",
    "WordPressClient",
    "WordPressError",
]
