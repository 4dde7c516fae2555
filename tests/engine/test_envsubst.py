"""``${VAR}``, ``${VAR:-default}``, ``${file:...}`` and ``$${`` in flow values."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.envsubst import has_reference, make_lookup, resolve, substitute
from engine.errors import SecretError
from engine.validation import load_deployment, validate_deployment
from nodes.inject import InjectConfig
from tests.flowkit import test_registry, validate_doc


def lookup_of(**env: str) -> object:
    return make_lookup({}, env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "broker.local"),
        ("mqtt://${HOST}:${PORT}/x", "mqtt://broker.local:1883/x"),
        ("${ HOST }", "broker.local"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # an empty value counts as unset with :-
        ("${EMPTY}", ""),  # but without a default it is simply empty
        ("${MISSING:-}", ""),
        ("${HOST:-fallback}", "broker.local"),
        ("${MISSING:-a:-b}", "a:-b"),
        ("price $${HOST} and ${HOST}", "price ${HOST} and broker.local"),
        ("$${", "${"),
        ("no references $ here {}", "no references $ here {}"),
    ],
)
def test_substitute(text: str, expected: str) -> None:
    lookup = make_lookup({}, {"HOST": "broker.local", "PORT": "1883", "EMPTY": ""})
    assert substitute(text, lookup) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "${MQTT_PASSWORD}",
            "environment variable MQTT_PASSWORD is not set (write ${MQTT_PASSWORD:-default} for a default)",
        ),
        ("${}", "invalid reference ${}: expected ${NAME}, ${NAME:-default} or ${file:/path}"),
        ("${A-b}", "invalid reference ${A-b}: expected ${NAME}, ${NAME:-default} or ${file:/path}"),
        ("${1X}", "invalid reference ${1X}: expected ${NAME}, ${NAME:-default} or ${file:/path}"),
        ("pass${WORD", "unterminated reference: '${' without '}' (write $${ for a literal ${)"),
    ],
)
def test_substitute_errors(text: str, message: str) -> None:
    with pytest.raises(SecretError) as info:
        substitute(text, make_lookup({}, {}))
    assert str(info.value) == message


def test_flow_env_shadows_process_env() -> None:
    lookup = make_lookup({"ROOM": "roof"}, {"ROOM": "cellar", "CITY": "Bonn"})
    assert substitute("${ROOM} in ${CITY}", lookup) == "roof in Bonn"
    assert lookup("NOPE") is None


def test_file_reference_strips_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt"
    secret.write_text("s3cret\n", encoding="utf-8")
    (tmp_path / "crlf").write_bytes(b"two\r\nlines\r\n")
    lookup = make_lookup({}, {})
    assert substitute(f"${{file:{secret}}}", lookup) == "s3cret"
    assert substitute("${file:crlf}", lookup, base_dir=tmp_path) == "two\r\nlines"
    assert substitute("${file:mqtt}", lookup, base_dir=tmp_path) == "s3cret"


def test_file_reference_errors(tmp_path: Path) -> None:
    (tmp_path / "latin").write_bytes(b"Gr\xfcn")
    lookup = make_lookup({}, {})
    with pytest.raises(SecretError, match=r"^cannot read \$\{file:missing\}: No such file or directory$"):
        substitute("${file:missing}", lookup, base_dir=tmp_path)
    with pytest.raises(SecretError, match=r"^cannot read \$\{file:latin\}: not UTF-8 text$"):
        substitute("${file:latin}", lookup, base_dir=tmp_path)


def test_has_reference() -> None:
    assert has_reference("${A}")
    assert has_reference("x $${A} ${B}")
    assert not has_reference("$${A}")
    assert not has_reference("plain")


def test_resolve_walks_structures_and_reports_every_failure() -> None:
    failures: list[tuple[tuple[object, ...], str]] = []
    value = {"a": ["${X}", {"b": "${NOPE}"}, 3], "c": "${ALSO_NOPE}", "d": None}
    out = resolve(value, make_lookup({"X": "1"}, {}), on_error=lambda p, e: failures.append((p, str(e))))
    assert out == {"a": ["1", {"b": "${NOPE}"}, 3], "c": "${ALSO_NOPE}", "d": None}
    assert [p for p, _ in failures] == [("a", 1, "b"), ("c",)]
    with pytest.raises(SecretError, match="environment variable NOPE is not set"):
        resolve(value, make_lookup({"X": "1"}, {}))


def test_references_in_a_flow_resolve_against_flow_env_then_process_env(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "topic").write_text("sensors/roof\n", encoding="utf-8")
    (tmp_path / "flow.yaml").write_text(
        """\
id: f
env:
  ROOM: roof
  ONCE: true
nodes:
  - id: a
    type: inject
    topic: ${file:secrets/topic}
    payload: ${ROOM}-${CITY}
    once: ${ONCE}
    interval: ${EVERY:-5s}
    wires: [b]
  - id: b
    type: collect
""",
        encoding="utf-8",
    )
    deployment, issues = load_deployment([tmp_path])
    validated, issues = validate_deployment(
        deployment, test_registry(), environ={"ROOM": "cellar", "CITY": "Bonn"}, prior_issues=issues
    )
    assert issues == []
    assert validated is not None
    cfg = validated.node_configs["a"]
    assert isinstance(cfg, InjectConfig)
    assert (cfg.topic, cfg.payload, cfg.once, cfg.interval) == ("sensors/roof", "roof-Bonn", True, 5.0)
    # the model keeps what was written, so the editor never sees resolved secrets
    assert validated.deployment.flows[0].nodes[0].raw_config["topic"] == "${file:secrets/topic}"


def test_a_missing_variable_is_a_located_issue() -> None:
    v, issues = validate_doc(
        "id: f\nnodes:\n  - id: a\n    type: inject\n    topic: t/${SITE}\n    wires: [b]\n  - id: b\n    type: collect\n"
    )
    assert v is None
    assert [i.format() for i in issues] == [
        "flow.yaml:5: node a: topic: environment variable SITE is not set (write ${SITE:-default} for a default)"
    ]
