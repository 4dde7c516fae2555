"""Push the generated provisioning to a running Grafana over its HTTP API (grafana-client, async).

Idempotent: each folder, datasource and dashboard is read first and written only when it
differs from what is generated, so a second push of unchanged flows sends no writes.
A folder per flow (uid derived from the flow id, title the flow id, as the file
provider's ``foldersFromFilesStructure`` names it). Datasource secrets are the
provisioning's ``${VAR}`` references resolved from the environment at push time; they
are sent, never printed. Grafana never returns secrets, so a secret is (re)sent only when
the datasource is created or updated for another reason, or Grafana reports it unset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import niquests
from grafana_client.api import AsyncGrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from grafana_provisioning.dashboards import stable_uid
from grafana_provisioning.provision import Provisioning

Action = Literal["created", "updated", "unchanged", "deleted"]
_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
#: Dashboard keys Grafana sets itself: not compared.
_SERVER_KEYS = ("id", "version")


class PushError(Exception):
    """The push could not be completed; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Change:
    """What the push did to one object."""

    kind: Literal["folder", "datasource", "dashboard"]
    name: str
    action: Action


#: The tag every klimaflow dashboard carries; with a klimaflow folder it marks the dashboards push may delete.
MANAGED_TAG = "klimaflow"


def folder_uid(name: str) -> str:
    """The uid of the folder named ``name`` (a flow id, or a declared folder)."""
    return stable_uid("folder", name)


def _resolve_secrets(secure: Mapping[str, str], environ: Mapping[str, str], ds_name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, ref in secure.items():
        m = _REF.match(ref)
        if m is None:
            raise PushError(f"datasource {ds_name}: {key} is not an environment reference")
        value = environ.get(m.group(1))
        if not value:
            raise PushError(f"datasource {ds_name}: environment variable {m.group(1)} ({key}) is not set")
        out[key] = value
    return out


async def _get(call: Any) -> dict[str, Any] | None:
    """The object, or None when Grafana answers 404."""
    try:
        result: dict[str, Any] = await call
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    return result


async def _push_folder(api: Any, name: str) -> Change:
    uid = folder_uid(name)
    existing = await _get(api.folder.get_folder(uid))
    if existing is None:
        await api.folder.create_folder(name, uid=uid)
        return Change("folder", name, "created")
    if existing.get("title") != name:
        await api.folder.update_folder(uid, title=name, overwrite=True)
        return Change("folder", name, "updated")
    return Change("folder", name, "unchanged")


def is_managed(hit: Mapping[str, Any]) -> bool:
    """A search hit klimaflow created: tagged ``klimaflow`` and in a folder whose uid klimaflow derives."""
    title = hit.get("folderTitle")
    return (
        MANAGED_TAG in (hit.get("tags") or [])
        and isinstance(title, str)
        and hit.get("folderUid") == folder_uid(title)
    )


async def _prune(api: Any, keep: set[str]) -> list[Change]:
    """Delete klimaflow's dashboards that are no longer generated; others' are never touched."""
    hits: list[dict[str, Any]] = await api.search.search_dashboards(
        tag=MANAGED_TAG, type_="dash-db", limit=5000
    )
    changes: list[Change] = []
    for hit in hits:
        if hit.get("uid") in keep or not is_managed(hit):
            continue
        await api.dashboard.delete_dashboard(hit["uid"])
        changes.append(Change("dashboard", str(hit.get("title", hit["uid"])), "deleted"))
    return changes


async def _push_datasource(api: Any, entry: Mapping[str, Any], environ: Mapping[str, str]) -> Change:
    body = {k: v for k, v in entry.items() if k not in ("editable", "secureJsonData")}
    secure = _resolve_secrets(entry.get("secureJsonData") or {}, environ, entry["name"])
    existing = await _get(api.datasource.get_datasource_by_uid(entry["uid"]))
    if existing is None:
        await api.datasource.create_datasource({**body, "secureJsonData": secure} if secure else body)
        return Change("datasource", entry["name"], "created")
    set_fields = existing.get("secureJsonFields") or {}
    same = all(existing.get(k) == v for k, v in body.items()) and all(set_fields.get(k) for k in secure)
    if same:
        return Change("datasource", entry["name"], "unchanged")
    await api.datasource.update_datasource_by_uid(
        entry["uid"], {**body, "secureJsonData": secure} if secure else body
    )
    return Change("datasource", entry["name"], "updated")


def _comparable(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in _SERVER_KEYS}


async def _push_dashboard(api: Any, model: dict[str, Any], folder: str) -> Change:
    existing = await _get(api.dashboard.get_dashboard(model["uid"]))
    if existing is not None:
        same_folder = (existing.get("meta") or {}).get("folderUid") == folder
        if same_folder and _comparable(existing.get("dashboard") or {}) == _comparable(model):
            return Change("dashboard", model["title"], "unchanged")
    body = {
        "dashboard": {**_comparable(model), "id": None},
        "folderUid": folder,
        "overwrite": True,
        "message": "klimaflow grafana push",
    }
    await api.dashboard.update_dashboard(body)
    return Change("dashboard", model["title"], "created" if existing is None else "updated")


def _describe(exc: Exception, url: str) -> str:
    if isinstance(exc, GrafanaUnauthorizedError):
        return f"Grafana at {url} refused the credentials (401 Unauthorized)"
    if isinstance(exc, GrafanaException):
        msg = exc.response.get("message") if isinstance(exc.response, dict) else None
        return f"Grafana at {url} answered {exc.status_code}: {msg or exc.message}"
    return f"cannot reach Grafana at {url}: {exc.__class__.__name__}"


async def push(
    prov: Provisioning,
    url: str,
    auth: str | tuple[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    prune: bool = True,
) -> list[Change]:
    """Create or update folders, datasources and dashboards, then (``prune``) delete klimaflow's
    dashboards no longer generated; returns what happened to each object, in that order."""
    env = os.environ if environ is None else environ
    # grafana-client's element methods carry no annotations: used through Any.
    api: Any = AsyncGrafanaApi.from_url(url, credential=auth, timeout=timeout)
    changes: list[Change] = []
    try:
        for name in dict.fromkeys(d.folder_name for d in prov.dashboards):
            changes.append(await _push_folder(api, name))
        for entry in prov.datasources["datasources"]:
            changes.append(await _push_datasource(api, entry, env))
        for d in prov.dashboards:
            changes.append(await _push_dashboard(api, d.to_json(), folder_uid(d.folder_name)))
        if prune:
            changes.extend(await _prune(api, {d.uid for d in prov.dashboards}))
    except (GrafanaException, niquests.exceptions.RequestException, OSError) as exc:
        raise PushError(_describe(exc, url)) from None
    finally:
        await api.client.s.close()
    return changes
