"""Grafana provisioning as post-apply hooks of the Supervisor: every applied deployment
(start, file reload, API deploy) rewrites the provisioning directory and/or pushes to
Grafana, so a new kind of stored data gets its dashboard with the flow that stores it.

The hooks run in the background after the deploy: a failure (Grafana down, directory not
writable) is logged and shown in the reload result's ``post_apply``, never blocking or
undoing the deploy. ``klimaflow run --grafana-provisioning DIR`` / ``--grafana-push URL``
(token from ``GRAFANA_TOKEN``) wire them in (engine/cli.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from engine.supervisor import PostApply
from engine.validation import ValidatedDeployment
from grafana_provisioning.provision import DEFAULT_DASHBOARDS_PATH, generate, write_provisioning
from grafana_provisioning.push import push


def provision_hook(
    out: Path, *, dashboards_path: str = DEFAULT_DASHBOARDS_PATH, prune: bool = True
) -> PostApply:
    """Rewrite the file-provisioning layout under ``out`` (files off the event loop)."""

    async def hook(validated: ValidatedDeployment) -> str:
        def work() -> str:
            prov = generate(validated, dashboards_path)
            result = write_provisioning(prov, out, prune=prune)
            return (
                f"{len(prov.dashboards)} dashboards in {out}: "
                f"{len(result.changed)} files changed, {len(result.removed)} removed"
            )

        return await asyncio.to_thread(work)

    return hook


def push_hook(
    url: str,
    auth: str | tuple[str, str],
    *,
    prune: bool = True,
    environ: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> PostApply:
    """Push folders, datasources and dashboards to the Grafana at ``url`` (raises PushError on failure)."""

    async def hook(validated: ValidatedDeployment) -> str:
        prov = await asyncio.to_thread(generate, validated)
        changes = await push(prov, url, auth, environ=environ, timeout=timeout, prune=prune)
        counts = {a: sum(1 for c in changes if c.action == a) for a in ("created", "updated", "deleted")}
        unchanged = sum(1 for c in changes if c.action == "unchanged")
        return (
            f"pushed to {url}: "
            + ", ".join(f"{n} {a}" for a, n in counts.items())
            + f", {unchanged} unchanged"
        )

    return hook


def grafana_hooks(
    provisioning_dir: Path | None,
    *,
    dashboards_path: str | None = None,
    url: str | None = None,
    token: str | None = None,
    prune: bool = True,
) -> list[tuple[str, PostApply]]:
    """The hooks ``klimaflow run`` options ask for (none when neither a directory nor a URL is given)."""
    hooks: list[tuple[str, PostApply]] = []
    if provisioning_dir is not None:
        hooks.append(
            (
                "grafana-provision",
                provision_hook(
                    provisioning_dir, dashboards_path=dashboards_path or DEFAULT_DASHBOARDS_PATH, prune=prune
                ),
            )
        )
    if url:
        if not token:
            raise ValueError(f"--grafana-push {url}: GRAFANA_TOKEN (a service account token) is not set")
        hooks.append(("grafana-push", push_hook(url, token, prune=prune)))
    return hooks
