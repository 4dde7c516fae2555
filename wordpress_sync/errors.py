"""What can go wrong talking to WordPress, as classes catch nodes can route on.

Builds on :mod:`engine.errors`::

    NodeError
    └── WordPressError               base; ``status`` and ``code`` are WordPress's, if it answered
        ├── WordPressAuthError       401: WordPress treated the request as anonymous
        ├── WordPressPermissionError 403: logged in, but the user lacks a capability
        ├── WordPressRequestError    other 4xx / not a WordPress REST answer: fix the request
        ├── ContentStripped          saved, but WordPress removed tags (no ``unfiltered_html``)
        ├── SlugConflict             WordPress stored the post under a different slug
        └── WordPressUnavailable     (also a ServiceUnavailable) down, slow or 5xx after retries

Only :class:`WordPressUnavailable` is worth retrying; everything else needs a person.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.errors import NodeError, ServiceUnavailable


class WordPressError(NodeError):
    """Base of every WordPress failure; ``status``/``code`` carry WordPress's answer."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class WordPressAuthError(WordPressError):
    """401: the credentials were not accepted, so WordPress handled the request as anonymous.

    WordPress does not say "wrong password" to the REST API: it drops the login and then
    refuses the action as it would for a visitor (``rest_cannot_create``,
    ``rest_forbidden_context``). The message says so, so nobody hunts for a missing role.
    """


class WordPressPermissionError(WordPressError):
    """403: the user is known but lacks a capability (an author publishing pages, a subscriber...)."""


class WordPressRequestError(WordPressError):
    """WordPress refused the request as sent (400 invalid parameter, 404 no such route...)."""


class ContentStripped(WordPressError):
    """WordPress saved the post but removed markup (``<iframe>``...) that was sent.

    kses strips it when the user lacks ``unfiltered_html``: authors and contributors on any
    site, and everyone but super admins on multisite. ``lost`` maps tag name to how many
    of them are missing; ``post_id`` and ``link`` name the (stripped) post that was saved.
    """

    def __init__(
        self, message: str, *, lost: Mapping[str, int], post_id: int, link: str, username: str
    ) -> None:
        self.lost = dict(lost)
        self.post_id = post_id
        self.link = link
        self.username = username
        super().__init__(message)


class SlugConflict(WordPressError):
    """WordPress saved the post under another slug (the wanted one is taken, e.g. by a trashed post)."""


class WordPressUnavailable(WordPressError, ServiceUnavailable):
    """WordPress did not answer usefully (refused, timed out, 5xx, 429) and retrying gave up."""
