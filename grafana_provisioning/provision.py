"""Grafana's file-provisioning layout for a deployment, and the embed URLs of its panels.

Layout written under ``--out`` (mount it as ``/etc/grafana/provisioning``)::

    datasources/klimaflow.yaml          one InfluxDB datasource per connection
    dashboards/klimaflow.yaml           the dashboard provider (a folder per flow)
    dashboards/klimaflow/<flow>/<uid>.json

Secrets (v1 password, v2 token) are written as ``${ENV}`` references, which Grafana
expands when it reads the file: the variable named in the flow's connection, so the
Grafana container gets the same variable as klimaflow.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ruamel.yaml import YAML

from engine.validation import ValidatedDeployment
from grafana_provisioning.dashboards import (
    GeneratedDashboard,
    build_dashboards,
    datasource_uid,
    slugify,
)
from grafana_provisioning.discovery import StoredData, discover

PROVIDER_NAME = "klimaflow"
DEFAULT_DASHBOARDS_PATH = "/etc/grafana/provisioning/dashboards/klimaflow"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class Provisioning:
    """Everything generated for one deployment."""

    stored: list[StoredData]
    dashboards: list[GeneratedDashboard]
    datasources: dict[str, Any]
    provider: dict[str, Any]


def _secret_ref(raw: Mapping[str, Any], key: str, connection: str) -> str:
    """``${VAR}`` naming the variable the flow takes the secret from (Grafana has no ``:-`` default)."""
    value = raw.get(key)
    if isinstance(value, str):
        m = _ENV_REF.search(value)
        if m:
            return "${" + m.group(1) + "}"
    return "${KLIMAFLOW_" + re.sub(r"[^A-Z0-9]+", "_", f"{connection}_{key}".upper()) + "}"


def _raw_connection(validated: ValidatedDeployment, name: str) -> Mapping[str, Any]:
    for flow in validated.deployment.flows:
        spec = flow.connections.get(name)
        if spec is not None:
            return spec.raw_config
    return {}


def datasources_document(validated: ValidatedDeployment, stored: list[StoredData]) -> dict[str, Any]:
    """Grafana's ``datasources/*.yaml`` content: InfluxQL for 1.x connections, Flux for 2.x."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for s in stored:
        if s.connection in seen:
            continue
        seen.add(s.connection)
        c = s.influx
        raw = _raw_connection(validated, s.connection)
        entry: dict[str, Any] = {
            "name": f"klimaflow {s.connection}",
            "type": "influxdb",
            "uid": datasource_uid(s.connection),
            "access": "proxy",
            "url": c.url,
            "editable": False,
        }
        if c.version == 1:
            entry["jsonData"] = {"version": "InfluxQL", "dbName": c.database, "httpMode": "POST"}
            if c.retention_policy:
                entry["jsonData"]["retentionPolicy"] = c.retention_policy
            if c.username:
                entry["user"] = c.username
                entry["secureJsonData"] = {"password": _secret_ref(raw, "password", s.connection)}
        else:
            entry["jsonData"] = {
                "version": "Flux",
                "organization": c.org,
                "defaultBucket": c.bucket,
                "httpMode": "POST",
            }
            entry["secureJsonData"] = {"token": _secret_ref(raw, "token", s.connection)}
        entries.append(entry)
    return {"apiVersion": 1, "datasources": entries}


def provider_document(dashboards_path: str = DEFAULT_DASHBOARDS_PATH) -> dict[str, Any]:
    """Grafana's ``dashboards/*.yaml``: one file provider, a folder per flow (its directory)."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": PROVIDER_NAME,
                "orgId": 1,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": dashboards_path, "foldersFromFilesStructure": True},
            }
        ],
    }


def generate(validated: ValidatedDeployment, dashboards_path: str = DEFAULT_DASHBOARDS_PATH) -> Provisioning:
    """Discover what the flows store and build datasources, provider and dashboards."""
    from grafana_provisioning.declared_build import build_declared

    stored = discover(validated)
    return Provisioning(
        stored=stored,
        dashboards=build_dashboards(stored) + build_declared(validated, stored),
        datasources=datasources_document(validated, stored),
        provider=provider_document(dashboards_path),
    )


def _yaml_text(data: Any) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


MANIFEST = ".klimaflow-manifest.json"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What :func:`write_provisioning` did."""

    #: Every file of the layout, in order (rewritten only when its content changed).
    written: list[Path]
    #: Dashboard files of an earlier run no longer generated, deleted (with ``prune``).
    removed: list[Path]
    #: Of ``written``, the files whose content changed (new ones included).
    changed: list[Path]


def _manifest(out: Path) -> list[str]:
    """The dashboard files an earlier run wrote (relative to the JSON directory); [] if none or unreadable."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    return (
        [f for f in files if isinstance(f, str) and ".." not in f.split("/")]
        if isinstance(files, list)
        else []
    )


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # Grafana polls the directory: never show it a half-written file
    return True


def write_provisioning(prov: Provisioning, out: Path, *, prune: bool = True) -> WriteResult:
    """Write the layout under ``out``.

    Only files this function wrote are ever deleted: a manifest next to the dashboards
    (``out/.klimaflow-manifest.json``) lists them, and with ``prune`` the ones no longer generated are removed (then empty
    folder directories). Without ``prune`` they stay, and stay listed for a later prune.
    Files others put under ``out`` are never touched.
    """
    written: list[Path] = []
    changed: list[Path] = []
    removed: list[Path] = []
    ds_dir = out / "datasources"
    db_dir = out / "dashboards"
    json_dir = db_dir / PROVIDER_NAME
    ds_dir.mkdir(parents=True, exist_ok=True)
    json_dir.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {
        ds_dir / f"{PROVIDER_NAME}.yaml": _yaml_text(prov.datasources),
        db_dir / f"{PROVIDER_NAME}.yaml": _yaml_text(prov.provider),
    }
    for d in prov.dashboards:
        text = json.dumps(d.to_json(), indent=2, ensure_ascii=False) + "\n"
        files[json_dir / d.folder_name / f"{d.uid}.json"] = text
    ours = {p.relative_to(json_dir).as_posix() for p in files if p.is_relative_to(json_dir)}
    before = _manifest(out)
    for rel in before:
        if rel in ours:
            continue
        path = json_dir / rel
        if prune:
            if path.is_file():
                path.unlink()
                removed.append(path)
                if path.parent != json_dir and not any(path.parent.iterdir()):
                    path.parent.rmdir()
        elif path.is_file():
            ours.add(rel)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if _write_if_changed(path, text):
            changed.append(path)
        written.append(path)
    manifest = {"generator": "klimaflow grafana provision", "files": sorted(ours)}
    # Beside, not inside, the directory Grafana's file provider reads (it would load any *.json there).
    _write_if_changed(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return WriteResult(written, removed, changed)


@dataclass(frozen=True, slots=True)
class Embed:
    """One panel's solo URL, what WordPress editors paste into an iframe."""

    dashboard_uid: str
    dashboard_title: str
    panel_id: int
    panel_title: str
    url: str


def embeds(
    dashboards: list[GeneratedDashboard],
    *,
    base_url: str = "",
    org_id: int = 1,
    time_from: str = "now-7d",
    time_to: str = "now",
    theme: str = "light",
) -> list[Embed]:
    """``/d-solo/{uid}/{slug}?orgId=..&panelId=..&from=..&to=..&theme=..`` for every panel."""
    out: list[Embed] = []
    for d in dashboards:
        slug = slugify(d.title)
        for panel in d.to_json().get("panels", []):
            query = urlencode(
                {"orgId": org_id, "panelId": panel["id"], "from": time_from, "to": time_to, "theme": theme}
            )
            url = f"{base_url.rstrip('/')}/d-solo/{d.uid}/{slug}?{query}"
            out.append(Embed(d.uid, d.title, int(panel["id"]), str(panel.get("title", "")), url))
    return out
