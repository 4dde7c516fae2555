"""Reading flow files (YAML or JSON) into plain data with line numbers, and into :mod:`engine.model`.

Both syntaxes go through ruamel.yaml (JSON is valid YAML 1.2), so a JSON file gets the
same per-key line numbers as a YAML file; a JSON file ruamel cannot read is retried with
the standard ``json`` module for its precise error position.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from engine.errors import FlowLoadError
from engine.model import (
    DEFAULT_INBOX,
    DEFAULT_PORT,
    NODE_COMMON_KEYS,
    ConnectionSpec,
    FlowSpec,
    NodeSpec,
    SourceMap,
)

FLOW_SUFFIXES = (".yaml", ".yml", ".json")
#: Files beside flows that are not flows: editor layout files.
LAYOUT_MARKER = ".layout."


#: Limits that keep hostile or broken documents (alias bombs, absurd nesting) from hanging
#: or crashing the loader; real flows are far below both.
MAX_DEPTH = 64
MAX_VALUES = 200_000


class _Converter:
    """ruamel's commented containers and scalar subclasses -> plain JSON-like Python, recording lines.

    Aliases are expanded (a plain tree has no shared references), so the number of values
    produced is bounded; a recursive alias is an error rather than infinite recursion.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        self.count = 0
        self.active: set[int] = set()

    def fail(self, message: str, path: tuple[Any, ...]) -> FlowLoadError:
        return FlowLoadError(message, file=self.file, line=SourceMap(self.file, self.lines).line(path))

    def convert(self, node: Any, path: tuple[Any, ...]) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(f"document too large (more than {MAX_VALUES} values; alias bomb?)", path)
        if isinstance(node, dict | list):
            if len(path) > MAX_DEPTH:
                raise self.fail(f"nested more than {MAX_DEPTH} levels deep", path)
            if id(node) in self.active:
                raise self.fail("recursive alias (a value that contains itself)", path)
            self.active.add(id(node))
            try:
                return self._container(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, str):
            return self._text(str(node), path)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, _dt.datetime | _dt.date):
            return node.isoformat()
        tag = getattr(getattr(node, "tag", None), "value", None)
        what = f"tag {tag}" if isinstance(tag, str) else type(node).__name__
        raise self.fail(
            f"unsupported value ({what}): use mappings, lists, strings, numbers, booleans and null", path
        )

    def _container(self, node: dict[Any, Any] | list[Any], path: tuple[Any, ...]) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            lc = getattr(node, "lc", None)
            for key, value in node.items():
                k = self._text(str(key), path)
                try:
                    line, _col = lc.key(key)  # type: ignore[union-attr]
                    self.lines[(*path, k)] = line + 1
                except (KeyError, TypeError, AttributeError):
                    pass
                out[k] = self.convert(value, (*path, k))
            return out
        items: list[Any] = []
        lc = getattr(node, "lc", None)
        for i, value in enumerate(node):
            try:
                line, _col = lc.item(i)  # type: ignore[union-attr]
                self.lines[(*path, i)] = line + 1
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            items.append(self.convert(value, (*path, i)))
        return items

    def _text(self, value: str, path: tuple[Any, ...]) -> str:
        """Join UTF-16 surrogate pairs from ``\\ud83d\\ude00`` escapes; a lone surrogate is an error."""
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            pass
        joined = value.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail("invalid unicode escape (unpaired surrogate)", path) from None
        return joined


def _plain(node: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], file: str = "") -> Any:
    """Convert parsed YAML/JSON to plain data, recording line numbers into ``lines``."""
    conv = _Converter(file)
    conv.lines = lines
    return conv.convert(node, path)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML or JSON text; raises :class:`FlowLoadError` with the line of a syntax error."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    lines: dict[tuple[Any, ...], int] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. ReusedAnchorWarning: legal YAML, noise in logs
            data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        kind = "JSON" if file.lower().endswith(".json") else "YAML"
        if kind == "JSON" and not isinstance(exc, DuplicateKeyError):
            # ruamel reads JSON as YAML 1.2; for JSON it rejects, json gives the precise position.
            try:
                data = json.loads(text, object_pairs_hook=_reject_duplicates)
            except json.JSONDecodeError as jexc:
                raise FlowLoadError(f"invalid JSON: {jexc.msg}", file=file, line=jexc.lineno) from None
            except (ValueError, RecursionError) as vexc:
                raise FlowLoadError(f"invalid JSON: {vexc}", file=file, line=line) from None
            return _plain(data, (), lines, file), SourceMap(file, lines)
        problem = exc.problem or str(exc).splitlines()[0]
        ctx_mark, prob_mark = exc.context_mark, exc.problem_mark
        if (
            exc.context
            and ctx_mark
            and prob_mark
            and ctx_mark.line != prob_mark.line
            and not isinstance(exc, DuplicateKeyError)
        ):
            problem = f"{problem} ({exc.context} started at line {ctx_mark.line + 1})"
        raise FlowLoadError(f"invalid {kind}: {problem}", file=file, line=line) from None
    except Exception as exc:  # ruamel raises a few non-Marked errors (e.g. RecursionError)
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        raise FlowLoadError(f"cannot parse: {first}", file=file) from None
    root_line = getattr(getattr(data, "lc", None), "line", None)
    if isinstance(root_line, int):
        lines[()] = root_line + 1
    plain = _plain(data, (), lines, file)
    return plain, SourceMap(file, lines)


def read_document(path: Path | str) -> tuple[Any, SourceMap]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FlowLoadError(f"cannot read file: {exc.strerror or exc}", file=str(p)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FlowLoadError(
            f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8",
            file=str(p),
            line=line,
        ) from None
    return parse_text(text, str(p))


def flow_files(paths: Iterable[Path | str]) -> list[Path]:
    """Flow files named directly or found (non-recursively, sorted) in the named directories."""
    out: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.iterdir()
                    if f.is_file()
                    and f.suffix.lower() in FLOW_SUFFIXES
                    and not f.name.startswith(".")
                    and LAYOUT_MARKER not in f.name
                )
            )
        else:
            out.append(p)
    return out


def add_import_paths(files: Iterable[Path]) -> None:
    """Make code beside the flows importable for ``python`` nodes (``package.module:func``).

    The folder of each flow file and its parent (the repository root in the usual
    ``repo/flows/*.yaml`` layout) go to the end of ``sys.path``, so installed packages win.
    """
    for f in files:
        folder = f.resolve().parent
        for p in (str(folder), str(folder.parent)):
            if p not in sys.path:
                sys.path.append(p)


def _wires(value: Any) -> dict[str, tuple[str, ...]]:
    """``[a, b]`` -> ``{"out": (a, b)}``; ``{port: [..]}`` kept; a bare string is one target."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {DEFAULT_PORT: (value,)}
    if isinstance(value, list):
        return {DEFAULT_PORT: tuple(str(v) for v in value if isinstance(v, str | int))}
    if isinstance(value, dict):
        out: dict[str, tuple[str, ...]] = {}
        for port, targets in value.items():
            if isinstance(targets, str):
                out[str(port)] = (targets,)
            elif isinstance(targets, list):
                out[str(port)] = tuple(str(t) for t in targets if isinstance(t, str | int))
        return out
    return {}


def _env_text(value: Any) -> str:
    """Env values as the text a shell would hold: ``true`` not ``True``, JSON for structures."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list):
        return json.dumps(value)
    return str(value)


def build_flow(data: Any, source: SourceMap) -> FlowSpec:
    """Build a :class:`FlowSpec` leniently: malformed parts are skipped (validation reports them)."""
    file = source.file
    doc: dict[str, Any] = data if isinstance(data, dict) else {}
    flow_id = str(doc.get("id") or Path(file).stem)
    env_raw = doc.get("env") if isinstance(doc.get("env"), dict) else {}
    env = {str(k): _env_text(v) for k, v in (env_raw or {}).items() if v is not None}
    connections: dict[str, ConnectionSpec] = {}
    conns = doc.get("connections")
    if isinstance(conns, dict):
        for name, spec in conns.items():
            if not isinstance(spec, dict):
                continue
            cfg = {k: v for k, v in spec.items() if k != "type"}
            connections[str(name)] = ConnectionSpec(
                name=str(name),
                type=str(spec.get("type", "")),
                flow_id=flow_id,
                raw_config=cfg,
                file=file,
                line=source.line(("connections", name)),
            )
    nodes: list[NodeSpec] = []
    raw_nodes = doc.get("nodes")
    if isinstance(raw_nodes, list):
        for index, item in enumerate(raw_nodes):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
                continue
            inbox = item.get("inbox", DEFAULT_INBOX)
            nodes.append(
                NodeSpec(
                    id=str(item["id"]),
                    type=str(item.get("type", "")),
                    flow_id=flow_id,
                    index=index,
                    name=item.get("name") if isinstance(item.get("name"), str) else None,
                    disabled=item.get("disabled") is True,
                    wires=_wires(item.get("wires")),
                    inbox=inbox
                    if isinstance(inbox, int) and not isinstance(inbox, bool) and inbox > 0
                    else DEFAULT_INBOX,
                    info=item.get("info") if isinstance(item.get("info"), str) else None,
                    raw_config={k: v for k, v in item.items() if k not in NODE_COMMON_KEYS},
                    file=file,
                    line=source.line(("nodes", index)),
                )
            )
    label = doc.get("label")
    desc = doc.get("description")
    return FlowSpec(
        id=flow_id,
        label=str(label) if isinstance(label, str) else flow_id,
        file=file,
        description=desc if isinstance(desc, str) else None,
        env=env,
        connections=connections,
        nodes=tuple(nodes),
        source=source,
        document=doc,
    )
