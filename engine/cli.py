"""The ``klimaflow`` command line: run, validate, nodes, schema, graph.

Expected failures (a missing file, an invalid flow, a bad option) end with one line on
stderr and a non-zero exit code, never a traceback: the people running this are
operators of a town's sensor network, not Python developers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from engine.errors import FlowValidationError, KlimaflowError
from engine.logging_setup import LEVELS, LogFormat, setup_logging
from engine.model import ERROR_PORT, Deployment, FlowSpec
from engine.registry import Registry, default_registry
from engine.runtime import tune_gc
from engine.schema import describe_connection_type, describe_node_type, flow_file_schema
from engine.types import CONNECTION_MARKER
from engine.validation import Issue, load_deployment, validate_deployment

if TYPE_CHECKING:
    from editor_api.auth import Authenticator
    from engine.supervisor import PostApply, Supervisor

log = logging.getLogger("klimaflow.cli")

DEFAULT_DATA_DIR = ".klimaflow"
DEFAULT_NODES_MARKDOWN = "docs/nodes.md"
#: Palette order; categories not listed follow alphabetically.
CATEGORY_ORDER = ("common", "function", "sequence", "parser", "network", "storage")
_EXISTING_PATHS = click.Path(exists=True, path_type=Path)


class CliError(click.ClickException):
    """An expected failure: reported as one line, exit code 1."""

    exit_code = 1


class _KlimaflowGroup(click.Group):
    """Reports every click error as one line instead of click's usage block."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name or "klimaflow", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # bare ``klimaflow`` or ``klimaflow nodes``-style groups: the help text
            code = exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "klimaflow"
            click.echo(f"{where}: error: {exc.format_message()} (see '{where} --help')", err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"klimaflow: error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except click.Abort:
            click.echo("klimaflow: aborted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(name="klimaflow", cls=_KlimaflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="klimaflow", prog_name="klimaflow")
def cli() -> None:
    """Declarative flow engine for open climate-data platforms.

    A deployment is one or more flow files (YAML or JSON) or directories of them.
    """


def main() -> None:
    """Entry point of the ``klimaflow`` console script and ``python -m engine``."""
    cli.main(prog_name="klimaflow")


# -- helpers ------------------------------------------------------------------------------


def _load_registry(quiet: bool = True) -> Registry:
    """The default registry; with ``quiet`` its import warnings are left to the caller to show."""
    logger = logging.getLogger("klimaflow.registry")
    old = logger.disabled
    logger.disabled = quiet or old
    try:
        return default_registry()
    finally:
        logger.disabled = old


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _counts(issues: Sequence[Issue]) -> tuple[int, int]:
    errors = sum(1 for i in issues if i.severity == "error")
    return errors, len(issues) - errors


def _issue_order(issue: Issue) -> tuple[str, int]:
    return issue.file or "", issue.line or 0


def _load_error_notes(registry: Registry, deployment: Deployment) -> dict[str, str]:
    """Import failures of the types this deployment uses: why 'unknown node type' happened."""
    used = {f"node:{n.type}" for f in deployment.flows for n in f.nodes}
    used |= {f"connection:{c.type}" for f in deployment.flows for c in f.connections.values()}
    return {key: err for key, err in sorted(registry.load_errors.items()) if key in used}


def _describe_load_error(key: str, error: str) -> str:
    kind, _, name = key.partition(":")
    return f"{kind} type {name!r} is installed but could not be loaded: {error}"


def validation_report(
    deployment: Deployment,
    issues: Sequence[Issue],
    registry: Registry,
    *,
    relative: Callable[[str | None], str | None] | None = None,
) -> dict[str, Any]:
    """``validate --format json`` output; the editor API answers with the same shape.

    ``relative`` rewrites issue file names (the API shows paths relative to the flow directory).
    """
    issues = sorted(issues, key=_issue_order)
    errors, warnings = _counts(issues)
    out = []
    for issue in issues:
        d = issue.to_dict()
        if relative is not None:
            d["file"] = relative(d["file"])
        out.append(d)
    summary = {
        "valid": errors == 0,
        "errors": errors,
        "warnings": warnings,
        "flows": len(deployment.flows),
        "nodes": sum(len(f.nodes) for f in deployment.flows),
        "load_errors": _load_error_notes(registry, deployment),
    }
    return {"issues": out, "summary": summary}


# -- validate -------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], fmt: str) -> None:
    """Check flow files and directories; exit 1 if any error was found.

    Prints every error and warning as FILE:LINE: node ID: FIELD: message.
    """
    registry = _load_registry()
    deployment, load_issues = load_deployment(paths)
    _validated, issues = validate_deployment(deployment, registry, prior_issues=load_issues)
    issues = sorted(issues, key=_issue_order)
    notes = _load_error_notes(registry, deployment)
    errors, warnings = _counts(issues)
    n_nodes = sum(len(f.nodes) for f in deployment.flows)
    if fmt == "json":
        click.echo(json.dumps(validation_report(deployment, issues, registry), indent=2))
    else:
        for issue in issues:
            click.echo(issue.format())
        for key, err in notes.items():
            click.echo(f"warning: {_describe_load_error(key, err)}")
        line = (
            f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} "
            f"in {_plural(len(deployment.flows), 'flow')} ({_plural(n_nodes, 'node')})"
        )
        click.secho(line, fg="red" if errors else ("yellow" if warnings else "green"))
    if errors:
        ctx.exit(1)


# -- run ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How ``serve`` runs a deployment."""

    data_dir: Path
    drain_timeout: float = 10.0
    #: (host, port) of the editor API; None: no API.
    api: tuple[str, int] | None = None
    auth_config: Path | None = None
    no_auth: bool = False
    #: Reverse proxies whose X-Forwarded-For the API believes (uvicorn's forwarded_allow_ips).
    trusted_proxies: str | None = None
    #: Reload when flow files change.
    watch: bool = True
    #: Supervisor post-apply hooks (Grafana provisioning), run after every applied deployment.
    post_apply: tuple[tuple[str, PostApply], ...] = ()


def _authenticator(options: ServeOptions) -> Authenticator:
    """The API's authenticator; refuses ``--no-auth`` anywhere but on a loopback address."""
    from editor_api.auth import Authenticator, AuthSettings, load_auth_settings
    from editor_api.server import is_loopback

    assert options.api is not None
    host = options.api[0]
    if options.no_auth:
        if options.auth_config is not None:
            raise CliError("--no-auth and --auth-config exclude each other")
        if not is_loopback(host):
            raise CliError(f"--no-auth is refused on {host}: only on a loopback address such as 127.0.0.1")
        return Authenticator(AuthSettings(), enabled=False)
    settings = load_auth_settings(options.auth_config) if options.auth_config else AuthSettings()
    return Authenticator(settings)


def _announce(url: str, token: str | None, auth_on: bool) -> None:
    """The editor URL (and a generated token) on stderr, not through logging: a log file or
    journal that collects klimaflow's logs must not collect the token too."""
    lines = [f"klimaflow: editor API on {url}  (OpenAPI docs: {url}/docs)"]
    if token is not None:
        lines += [
            "klimaflow: no users configured (--auth-config); the admin token of this run is:",
            f"    {token}",
            f'    e.g. curl -H "Authorization: Bearer {token}" {url}/api/status',
        ]
    elif not auth_on:
        lines.append("klimaflow: authentication is OFF (--no-auth)")
    click.echo("\n".join(lines), err=True)


async def serve(
    paths: Sequence[Path], options: ServeOptions, *, stop: asyncio.Event | None = None
) -> Supervisor:
    """Start the flows (and the editor API, the file watcher), run until ``stop`` is set or
    SIGINT/SIGTERM arrives; then stop the API and watcher, drain and stop the flows.

    Raises :class:`FlowValidationError` before anything starts if the deployment is invalid.
    """
    from engine.supervisor import Supervisor

    stop = stop or asyncio.Event()
    auth: Authenticator | None = _authenticator(options) if options.api else None
    sock = None
    if options.api is not None:
        from editor_api.server import bind

        sock = bind(*options.api)
    supervisor = Supervisor(
        paths, data_dir=options.data_dir, drain_timeout=options.drain_timeout, post_apply=options.post_apply
    )
    api = None
    watch_stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        with _stop_on_signals(stop):
            try:
                started = await supervisor.start()
                for issue in started.issues:
                    if issue.severity == "warning":
                        log.warning("%s", issue.format())
                tune_gc()
                if sock is not None and auth is not None:
                    from editor_api import create_app
                    from editor_api.server import ApiServer

                    api = ApiServer(
                        create_app(supervisor, auth), sock, trusted_proxies=options.trusted_proxies
                    )
                    await api.start()
                    token = auth.generate_admin_token() if auth.needs_generated_token else None
                    _announce(api.url, token, auth.enabled)
                if options.watch:
                    watcher = asyncio.create_task(_watch(supervisor, watch_stop), name="watch")
                log.info("running %s; press Ctrl-C to stop", ", ".join(map(str, paths)))
                await stop.wait()
                log.info("stopping: pausing sources and draining (up to %.1fs)", options.drain_timeout)
            finally:
                watch_stop.set()
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watcher, 5)
                if api is not None:
                    await api.stop()
                await supervisor.stop()
    finally:
        if sock is not None:
            sock.close()
    engine = supervisor.engine
    if engine is not None and engine.unhandled_errors:
        log.warning("%s had no error wire or catch node", _plural(engine.unhandled_errors, "error"))
    return supervisor


async def _watch(supervisor: Supervisor, stop: asyncio.Event) -> None:
    """File watching must never take the flows down with it."""
    try:
        await supervisor.watch(stop=stop)
    except Exception as exc:
        log.error(
            "watching the flow files failed, changes are no longer reloaded: %s: %s", type(exc).__name__, exc
        )


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: graceful stop. Second: leave at once without draining."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: exiting without draining", name)
            logging.shutdown()
            os._exit(130)
        log.info("%s received", name)
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, int(sig))
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="KLIMAFLOW_LOG_LEVEL",
    help="Level of klimaflow's own log messages.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "rich", "plain"]),
    default="auto",
    show_default=True,
    help="rich columns on a terminal, plain timestamped lines otherwise (auto).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="KLIMAFLOW_DATA",
    help="Where nodes keep state (spool files, ...); default $KLIMAFLOW_DATA or ./.klimaflow.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait on stop for in-flight messages to reach their sinks.",
)
@click.option(
    "--api",
    "api",
    metavar="HOST:PORT",
    default=None,
    help="Serve the editor API (and /metrics, /healthz, /readyz) on HOST:PORT, e.g. 127.0.0.1:1880.",
)
@click.option(
    "--auth-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Users, API tokens and OIDC settings of the API (YAML). Without it, an admin token is generated and printed.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve the API without authentication; refused unless HOST is a loopback address.",
)
@click.option(
    "--trusted-proxies",
    metavar="ADDRS",
    default=None,
    envvar="KLIMAFLOW_TRUSTED_PROXIES",
    help=(
        "Comma-separated addresses or networks (or *) of reverse proxies in front of the API whose "
        "X-Forwarded-For is believed: the client address that logs and the login throttle see. "
        "Default: loopback only."
    ),
)
@click.option("--no-watch", is_flag=True, help="Do not reload when flow files change.")
@click.option(
    "--grafana-provisioning",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="KLIMAFLOW_GRAFANA_PROVISIONING",
    help="Rewrite Grafana's provisioning directory after every applied deployment (docs/grafana.md).",
)
@click.option(
    "--grafana-dashboards-path",
    default=None,
    help="Where Grafana sees the dashboard JSON files (with --grafana-provisioning).",
)
@click.option(
    "--grafana-push",
    "grafana_url",
    metavar="URL",
    default=None,
    envvar="KLIMAFLOW_GRAFANA_PUSH",
    help="Push dashboards to the Grafana at URL after every applied deployment (token from $GRAFANA_TOKEN).",
)
@click.option(
    "--grafana-prune/--grafana-no-prune",
    default=True,
    show_default=True,
    help="Remove dashboards klimaflow generated earlier that are no longer generated.",
)
def run(
    paths: tuple[Path, ...],
    log_level: str,
    log_format: LogFormat,
    data_dir: Path,
    drain_timeout: float,
    api: str | None,
    auth_config: Path | None,
    no_auth: bool,
    trusted_proxies: str | None,
    no_watch: bool,
    grafana_provisioning: Path | None,
    grafana_dashboards_path: str | None,
    grafana_url: str | None,
    grafana_prune: bool,
) -> None:
    """Run a deployment in the foreground until Ctrl-C or SIGTERM.

    Validation runs first: an invalid deployment prints its issues and exits 1.
    Saved changes to the flow files are reloaded while it runs (unless --no-watch);
    an invalid change is refused and the running flows stay.
    On a signal, sources pause, in-flight messages drain and sinks flush, then exit 0.
    """
    if api is None and (auth_config is not None or no_auth or trusted_proxies):
        raise click.UsageError("--auth-config, --no-auth and --trusted-proxies need --api")
    setup_logging(log_level.lower(), log_format)
    # The editor API (FastAPI, uvicorn) and the Grafana clients are imported only when asked
    # for: a plain `klimaflow run` then starts with about 25 MiB less resident memory.
    try:
        listen = None
        if api is not None:
            from editor_api.server import parse_listen

            listen = parse_listen(api)
        hooks: list[tuple[str, PostApply]] = []
        if grafana_provisioning is not None or grafana_url:
            from grafana_provisioning.deploy_hook import grafana_hooks

            hooks = grafana_hooks(
                grafana_provisioning,
                dashboards_path=grafana_dashboards_path,
                url=grafana_url,
                token=os.environ.get("GRAFANA_TOKEN"),
                prune=grafana_prune,
            )
        options = ServeOptions(
            data_dir=data_dir,
            drain_timeout=drain_timeout,
            api=listen,
            auth_config=auth_config,
            no_auth=no_auth,
            trusted_proxies=trusted_proxies or None,
            watch=not no_watch,
            post_apply=tuple(hooks),
        )
    except (KlimaflowError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        asyncio.run(serve(list(paths), options))
    except FlowValidationError as exc:
        for issue in sorted(exc.issues, key=_issue_order):
            click.echo(issue.format(), err=True)
        errors, _ = _counts(exc.issues)
        raise CliError(f"{_plural(errors, 'error')}: deployment not started") from None
    except KlimaflowError as exc:
        raise CliError(str(exc).splitlines()[0]) from None


# -- nodes ----------------------------------------------------------------------------------


def _category_key(category: str) -> tuple[int, str]:
    try:
        return CATEGORY_ORDER.index(category), category
    except ValueError:
        return len(CATEGORY_ORDER), category


def _resolve_ref(ref: str, defs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = ref.rsplit("/", 1)[-1]
    target = defs.get(name)
    return name, target if isinstance(target, dict) else {}


def schema_type(prop: Any, defs: dict[str, Any]) -> str:
    """A short, human type name for a JSON Schema property (``duration | null``, ``list[string]``)."""
    if not isinstance(prop, dict) or not prop:
        return "any"
    if isinstance(prop.get(CONNECTION_MARKER), str):
        return f"connection ({prop[CONNECTION_MARKER]})"
    if prop.get("x-klimaflow-widget") == "duration":
        return "duration"
    if prop.get("writeOnly") or prop.get("format") == "password":
        return "secret"
    if "$ref" in prop:
        name, target = _resolve_ref(str(prop["$ref"]), defs)
        if "enum" in target:
            return " | ".join(json.dumps(v) for v in target["enum"])
        return str(target.get("title") or name)
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            parts: list[str] = []
            for sub in prop[key]:
                label = schema_type(sub, defs)
                if label not in parts:
                    parts.append(label)
            return " | ".join(parts)
    t = prop.get("type")
    if t == "array":
        items = prop.get("items")
        return f"list[{schema_type(items, defs)}]" if items else "list"
    if t == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"dict[string, {schema_type(extra, defs)}]"
        return "object"
    if isinstance(t, list):
        return " | ".join(map(str, t))
    return str(t) if t else "any"


@dataclass(frozen=True, slots=True)
class FieldDoc:
    name: str
    type: str
    required: bool
    default: str
    description: str


def config_fields(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> list[FieldDoc]:
    """Fields of a config model's JSON Schema, in declaration order."""
    defs = schema.get("$defs", {}) if defs is None else defs
    required = set(schema.get("required", []))
    out: list[FieldDoc] = []
    for name, prop in schema.get("properties", {}).items():
        out.append(
            FieldDoc(
                name=name,
                type=schema_type(prop, defs),
                required=name in required,
                default="" if "default" not in prop else json.dumps(prop["default"], ensure_ascii=False),
                description=" ".join(str(prop.get("description", "")).split()),
            )
        )
    return out


def _nested_models(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Object models a config refers to (e.g. the rules of ``change``), in first-use order."""
    defs: dict[str, Any] = schema.get("$defs", {})
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name, target = _resolve_ref(ref, defs)
                if name not in found and target.get("properties"):
                    found.append(name)
                    walk(target)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in schema.items() if k != "$defs"})
    return [(name, defs[name]) for name in found]


def node_infos(registry: Registry) -> list[dict[str, Any]]:
    """Every node type as ``nodes --json`` and ``GET /api/nodes`` describe it, in palette order."""
    infos = [describe_node_type(registry.nodes[name]) for name in registry.nodes]
    for name, info in zip(registry.nodes, infos, strict=True):
        info["type"] = name  # the registered name wins over the class attribute
    infos.sort(key=lambda d: (*_category_key(d["category"]), d["type"]))
    return infos


def _ports(info: dict[str, Any]) -> str:
    outs = [*info["outputs"], ERROR_PORT]
    text = ", ".join(outs)
    return text + " (depend on config)" if info["dynamic_outputs"] else text


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_fields_table(fields: list[FieldDoc]) -> list[str]:
    if not fields:
        return ["No options.", ""]
    lines = ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for f in fields:
        default = "*required*" if f.required else (f"`{_md_cell(f.default)}`" if f.default else "")
        lines.append(f"| `{f.name}` | {_md_cell(f.type)} | {default} | {_md_cell(f.description)} |")
    lines.append("")
    return lines


def _md_config(schema: dict[str, Any], heading: str) -> list[str]:
    lines: list[str] = []
    doc = str(schema.get("description", "")).strip()
    if doc:
        lines += [doc, ""]
    lines += _md_fields_table(config_fields(schema))
    for name, sub in _nested_models(schema):
        lines += [f"{heading} `{sub.get('title', name)}`", ""]
        sub_doc = str(sub.get("description", "")).strip()
        if sub_doc:
            lines += [sub_doc, ""]
        lines += _md_fields_table(config_fields(sub, schema.get("$defs", {})))
    return lines


def nodes_markdown(registry: Registry) -> str:
    """docs/nodes.md: the node and connection reference, generated entirely from the config models."""
    infos = node_infos(registry)
    categories: dict[str, list[dict[str, Any]]] = {}
    for info in infos:
        categories.setdefault(info["category"], []).append(info)
    lines = [
        "# Node reference",
        "",
        "<!-- Generated by `klimaflow nodes --markdown` from the node types' config models. "
        "Do not edit by hand. -->",
        "",
        "Every node also takes the common keys `id`, `type`, `name`, `disabled`, `info`, `inbox` and "
        "`wires`, and has an implicit `error` output port; see [flow-format.md](flow-format.md). "
        "A *duration* is a number of seconds or a string such as `500ms`, `10s`, `5m`, `1h`, `1d`. "
        "Any non-string field may also be written as an environment reference such as `${INTERVAL:-10s}`.",
        "",
        "## Contents",
        "",
    ]
    for category, members in categories.items():
        links = ", ".join(f"[{i['type']}](#{i['type']})" for i in members)
        lines.append(f"- **{category}**: {links}")
    if registry.connections:
        lines.append("- [Connection types](#connection-types)")
    lines.append("")
    for category, members in categories.items():
        lines += [f"## {category}", ""]
        for info in members:
            lines += [f"### {info['type']}", ""]
            lines += [info["description"] or info["summary"], ""]
            inputs = "none (source)" if info["inputs"] == 0 else str(info["inputs"])
            outs = ", ".join(f"`{p}`" for p in info["outputs"])
            outs = f"{outs}, `{ERROR_PORT}`" if outs else f"`{ERROR_PORT}`"
            if info["dynamic_outputs"]:
                outs += " (the ports depend on the config)"
            lines += [f"- Inputs: {inputs}", f"- Output ports: {outs}", ""]
            lines += _md_config(info["config_schema"], "####")
    if registry.connections:
        lines += [
            "## Connection types",
            "",
            "Declared once under a flow's `connections:` and referenced by name from nodes; "
            "one live client serves every node that uses it.",
            "",
        ]
        for name in sorted(registry.connections):
            cinfo = describe_connection_type(registry.connections[name])
            lines += [f"### {name}", "", cinfo["description"] or cinfo["summary"], ""]
            lines += _md_config(cinfo["config_schema"], "####")
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _print_nodes(registry: Registry, infos: list[dict[str, Any]]) -> None:
    console = Console(highlight=False, soft_wrap=False)
    for info in infos:
        inputs = "no input (source)" if info["inputs"] == 0 else f"{info['inputs']} input"
        console.print(
            f"[bold]{info['type']}[/bold] [dim]({info['category']})[/dim]  {info['summary']}",
        )
        console.print(f"  {inputs}; output ports: {_ports(info)}")
        fields = config_fields(info["config_schema"])
        if fields:
            table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
            table.add_column("field", style="cyan", no_wrap=True)
            table.add_column("type", no_wrap=True)
            table.add_column("default", no_wrap=True)
            table.add_column("description")
            for f in fields:
                default = "required" if f.required else (f"= {f.default}" if f.default else "")
                table.add_row(f"  {f.name}", f.type, default, f.description)
            console.print(table)
        console.print()


@cli.command()
@click.argument("types", nargs=-1, metavar="[TYPE...]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--markdown",
    "markdown",
    is_flag=False,
    flag_value=DEFAULT_NODES_MARKDOWN,
    default=None,
    metavar="[FILE]",
    help=f"Write the Markdown reference to FILE (default {DEFAULT_NODES_MARKDOWN}; '-' for stdout).",
)
def nodes(types: tuple[str, ...], as_json: bool, markdown: str | None) -> None:
    """List node types: summary, ports and config fields (name, type, default, description)."""
    registry = _load_registry()
    for key, err in sorted(registry.load_errors.items()):
        click.secho(f"warning: {_describe_load_error(key, err)}", fg="yellow", err=True)
    if markdown is not None:
        text = nodes_markdown(registry)
        if markdown == "-":
            click.echo(text, nl=False)
        else:
            target = Path(markdown)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
            click.echo(f"wrote {target} ({_plural(len(registry.nodes), 'node type')})", err=True)
        return
    infos = node_infos(registry)
    unknown = [t for t in types if t not in registry.nodes]
    if unknown:
        raise CliError(f"unknown node type {', '.join(map(repr, unknown))}")
    if types:
        infos = [i for i in infos if i["type"] in types]
    if as_json:
        payload = {
            "nodes": infos,
            "connections": [
                describe_connection_type(registry.connections[n]) for n in sorted(registry.connections)
            ],
            "load_errors": dict(sorted(registry.load_errors.items())),
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    _print_nodes(registry, infos)


# -- schema ---------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE instead of stdout (point `# yaml-language-server: $schema=FILE` at it).",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of a flow file, for editors such as VS Code."""
    text = json.dumps(flow_file_schema(_load_registry()), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}", err=True)


# -- graph ----------------------------------------------------------------------------------

_MERMAID_ID = re.compile(r"^[A-Za-z_]\w*$", re.ASCII)
_MERMAID_RESERVED = {
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "class",
    "classdef",
    "click",
    "linkstyle",
}


def _mermaid_ids(names: Sequence[str]) -> dict[str, str]:
    """Mermaid-safe ids: non-word characters become ``_``; keywords and clashes get a suffix."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = re.sub(r"\W", "_", name, flags=re.ASCII)
        if not _MERMAID_ID.match(base) or base.lower() in _MERMAID_RESERVED:
            base = f"n_{base}"
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        out[name] = candidate
    return out


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _edges(flow: FlowSpec, known: set[str]) -> Iterator[tuple[str, str, str]]:
    for node in flow.nodes:
        for port, target in node.targets():
            if target in known:
                yield node.id, port, target


def _label(name: str | None, node_id: str) -> str:
    return name if name and name != node_id else node_id


def graph_text(deployment: Deployment) -> str:
    """An indented tree: flow, then each node with its ports and their targets."""
    known = set(deployment.nodes())
    lines: list[str] = []
    for flow in deployment.flows:
        title = f"flow {flow.id}" + (f" ({flow.label})" if flow.label != flow.id else "")
        lines.append(f"{title}  [{flow.file}]")
        for node in flow.nodes:
            name = f" {node.name!r}" if node.name and node.name != node.id else ""
            disabled = " (disabled)" if node.disabled else ""
            lines.append(f"  {node.id} [{node.type}]{name}{disabled}")
            for port, targets in node.wires.items():
                shown = [t if t in known else f"{t} (missing)" for t in targets]
                if shown:
                    lines.append(f"    {port} -> {', '.join(shown)}")
    return "\n".join(lines) + "\n"


def graph_mermaid(deployment: Deployment) -> str:
    """``flowchart LR`` with one subgraph per flow; error wires are dotted."""
    known = set(deployment.nodes())
    flow_keys = [f"flow_{f.id}" for f in deployment.flows]
    ids = _mermaid_ids([*flow_keys, *(n.id for f in deployment.flows for n in f.nodes)])
    lines = ["flowchart LR"]
    for key, flow in zip(flow_keys, deployment.flows, strict=True):
        lines.append(f'  subgraph {ids[key]}["{_mermaid_text(flow.label)}"]')
        for node in flow.nodes:
            label = f"{_label(node.name, node.id)}<br/><i>{node.type}</i>"
            lines.append(f'    {ids[node.id]}["{_mermaid_text(label)}"]')
        lines.append("  end")
    for flow in deployment.flows:
        for src, port, dst in _edges(flow, known):
            arrow = "-.->" if port == ERROR_PORT else "-->"
            lines.append(f"  {ids[src]} {arrow}|{_mermaid_text(port)}| {ids[dst]}")
    return "\n".join(lines) + "\n"


def _dot(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def graph_dot(deployment: Deployment, registry: Registry) -> str:
    """Graphviz: one cluster per flow, edges labelled with their port, error wires dashed red."""
    known = set(deployment.nodes())
    lines = [
        "digraph klimaflow {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="sans-serif"];',
        '  edge [fontname="sans-serif", fontsize=10];',
    ]
    for i, flow in enumerate(deployment.flows):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_dot(flow.label)};")
        for node in flow.nodes:
            cls = registry.nodes.get(node.type)
            color = cls.color if cls is not None else "#dddddd"
            label = f"{_label(node.name, node.id)}\n{node.type}"
            lines.append(f"    {_dot(node.id)} [label={_dot(label)}, fillcolor={_dot(color)}];")
        lines.append("  }")
    for flow in deployment.flows:
        for src, port, dst in _edges(flow, known):
            style = ", style=dashed, color=red" if port == ERROR_PORT else ""
            lines.append(f"  {_dot(src)} -> {_dot(dst)} [label={_dot(port)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="text: indented tree; mermaid: flowchart for Markdown; dot: Graphviz.",
)
def graph(paths: tuple[Path, ...], fmt: str) -> None:
    """Show the wiring of a deployment with named ports.

    Works on flows that do not validate yet, as long as the files can be read.
    """
    deployment, issues = load_deployment(paths)
    fatal = [i for i in issues if i.code in ("load", "no-flows")]
    if fatal:
        for issue in fatal[1:]:
            click.echo(issue.format(), err=True)
        raise CliError(fatal[0].format())
    if fmt == "mermaid":
        click.echo(graph_mermaid(deployment), nl=False)
    elif fmt == "dot":
        click.echo(graph_dot(deployment, _load_registry()), nl=False)
    else:
        click.echo(graph_text(deployment), nl=False)


# -- auth -----------------------------------------------------------------------------------


@cli.group()
def auth() -> None:
    """Make entries for the editor API's auth config (--auth-config)."""


@auth.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def hash_password_cmd(from_stdin: bool) -> None:
    """Print an argon2 hash of a password, for a user's password_hash."""
    from editor_api.auth import hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    if not password:
        raise CliError("empty password")
    click.echo(hash_password(password))


@auth.command("new-token")
@click.option("--id", "token_id", required=True, help="Name of the token, e.g. prometheus.")
@click.option("--role", type=click.Choice(["reader", "editor", "admin"]), default="reader", show_default=True)
def new_token_cmd(token_id: str, role: str) -> None:
    """Make an API token: the token on stderr (shown once), its config entry on stdout."""
    from editor_api.auth import hash_token, new_token

    token = new_token()
    click.echo(f"token (store it now, it is not kept anywhere): {token}", err=True)
    click.echo(f"tokens:\n  - id: {token_id}\n    role: {role}\n    token_hash: {hash_token(token)}")


# -- grafana (issue 6) -------------------------------------------------------------------------

from engine.validation import ValidatedDeployment, load_and_validate  # noqa: E402


def _grafana_validated(paths: tuple[Path, ...]) -> ValidatedDeployment:
    try:
        return load_and_validate(paths, _load_registry())
    except FlowValidationError as exc:
        for issue in sorted(exc.issues, key=_issue_order):
            click.echo(issue.format(), err=True)
        raise CliError("the deployment is invalid: nothing generated") from None


@cli.group()
def grafana() -> None:
    """Grafana dashboards and provisioning generated from what the flows store."""


@grafana.command("provision")
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the provisioning layout to (mount it as /etc/grafana/provisioning).",
)
@click.option(
    "--dashboards-path",
    default=None,
    help="Where Grafana sees the dashboard JSON files (default: /etc/grafana/provisioning/dashboards/klimaflow).",
)
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="Delete dashboard files an earlier run wrote that are no longer generated (never others' files).",
)
def grafana_provision(paths: tuple[Path, ...], out: Path, dashboards_path: str | None, prune: bool) -> None:
    """Write datasources/*.yaml, dashboards/*.yaml and the dashboard JSON files."""
    from grafana_provisioning.provision import DEFAULT_DASHBOARDS_PATH, generate, write_provisioning

    prov = generate(_grafana_validated(paths), dashboards_path or DEFAULT_DASHBOARDS_PATH)
    try:
        result = write_provisioning(prov, out, prune=prune)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    for s in prov.stored:
        for note in s.notes:
            click.echo(f"warning: node {s.node_id}: {note}", err=True)
    for path in result.written:
        click.echo(str(path))
    for path in result.removed:
        click.echo(f"removed {path}", err=True)
    click.echo(
        f"{_plural(len(prov.dashboards), 'dashboard')}, "
        f"{_plural(len(prov.datasources['datasources']), 'datasource')} written to {out}",
        err=True,
    )


@grafana.command("embeds")
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option(
    "--base-url", default="", help="Grafana's public URL to prefix, e.g. https://grafana.example.de."
)
@click.option("--org-id", default=1, show_default=True, type=int, help="Grafana organization id.")
@click.option("--from", "time_from", default="now-7d", show_default=True, help="Start of the time range.")
@click.option("--to", "time_to", default="now", show_default=True, help="End of the time range.")
@click.option("--theme", type=click.Choice(["light", "dark"]), default="light", show_default=True)
def grafana_embeds(
    paths: tuple[Path, ...], base_url: str, org_id: int, time_from: str, time_to: str, theme: str
) -> None:
    """List the embed URL (/d-solo/...) of every generated panel: dashboard, panel, URL per line."""
    from grafana_provisioning.provision import embeds, generate

    prov = generate(_grafana_validated(paths))
    for e in embeds(
        prov.dashboards, base_url=base_url, org_id=org_id, time_from=time_from, time_to=time_to, theme=theme
    ):
        click.echo(f"{e.dashboard_title}\t{e.panel_title}\t{e.url}")


@grafana.command("push")
@click.argument("paths", nargs=-1, required=True, type=_EXISTING_PATHS, metavar="PATH...")
@click.option("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000.")
@click.option("--token-env", default=None, help="Environment variable holding a service account token.")
@click.option("--user", default=None, help="User for basic auth (with --password-env).")
@click.option("--password-env", default=None, help="Environment variable holding the basic-auth password.")
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="Delete dashboards klimaflow pushed earlier that are no longer generated (never others').",
)
def grafana_push(
    paths: tuple[Path, ...],
    url: str,
    token_env: str | None,
    user: str | None,
    password_env: str | None,
    prune: bool,
) -> None:
    """Create or update folders, datasources and dashboards in a running Grafana; print what changed."""
    import asyncio
    import os

    from grafana_provisioning.provision import generate
    from grafana_provisioning.push import PushError, push

    auth: str | tuple[str, str]
    if token_env and not user and not password_env:
        token = os.environ.get(token_env)
        if not token:
            raise CliError(f"environment variable {token_env} (the Grafana token) is not set")
        auth = token
    elif user and password_env and not token_env:
        password = os.environ.get(password_env)
        if not password:
            raise CliError(f"environment variable {password_env} (the Grafana password) is not set")
        auth = (user, password)
    else:
        raise CliError("give either --token-env NAME or --user U --password-env NAME")
    prov = generate(_grafana_validated(paths))
    try:
        changes = asyncio.run(push(prov, url, auth, prune=prune))
    except PushError as exc:
        raise CliError(str(exc)) from None
    for c in changes:
        click.echo(f"{c.action}\t{c.kind}\t{c.name}")
    actions = ("created", "updated", "unchanged", *(("deleted",) if prune else ()))
    counts = {a: sum(1 for c in changes if c.action == a) for a in actions}
    click.echo(", ".join(f"{n} {a}" for a, n in counts.items()), err=True)


from wordpress_sync.cli import wordpress as _wordpress_group  # noqa: E402 - issue 7

cli.add_command(_wordpress_group)


# -- import (issue 8) ---------------------------------------------------------------------------

from engine.importer import import_command  # noqa: E402

cli.add_command(import_command)
