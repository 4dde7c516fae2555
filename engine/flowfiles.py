"""Writing flow files for deploys: which files change, round-trip rendering, atomic writes.

A deploy through the API must leave files a person can still read and diff, because git
stays the source of truth:

* A flow sent as YAML/JSON *text* is checked to parse and written as sent.
* A flow sent as a *mapping* (the editor's parsed flow) is merged into the file's current
  text with ruamel.yaml's round trip: only what changed is rewritten. Comments, key order,
  quoting, flow/block style and blank lines of everything else stay; nodes are matched by
  ``id``, so editing, moving or deleting one node leaves the others' lines alone. A node's
  comment block (the comment and blank lines right above it) travels with the node.
* A ``.json`` file keeps its key order and indent (JSON has no comments to keep).
* A new file is written as block-style YAML with a schema comment for editors.
* Every write goes to a temporary file beside the target, is fsync'd and renamed over it,
  so no reader (the file watcher, git, a person) ever sees half a file.

Renames: a flow whose ``id`` changed keeps its file (the name is only chosen when a file
is created), so ``git log --follow`` and people's bookmarks keep working; a flow whose
file no longer exists gets a new one named after its id. Two flows never share a file.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import logging
import os
import re
import secrets
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.anchor import Anchor
from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarint import BinaryInt, HexCapsInt, HexInt, OctalInt
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    PlainScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import (
    BlockEntryToken,
    BlockMappingStartToken,
    BlockSequenceStartToken,
    CommentToken,
    DocumentStartToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
    KeyToken,
    ScalarToken,
    StreamEndToken,
    StreamStartToken,
    Token,
    ValueToken,
)

from engine.errors import FlowLoadError, FlowValidationError
from engine.loader import parse_text

log = logging.getLogger("klimaflow.flowfiles")

Document = str | Mapping[str, Any]

#: The editor schema, referenced from new YAML files (path relative to the repository).
SCHEMA_PATH = Path("docs") / "flow.schema.json"
#: Width at which a rewritten folded (``>``) text wraps when its old wrapping is unknown.
FOLD_WIDTH = 88
#: A ``wires`` value this short (as JSON) is written in flow style: ``{out: [a], error: [b]}``.
FLOW_WIRES_WIDTH = 80

_ROOT_ORDER = ("$schema", "id", "label", "description", "env", "connections", "nodes")
_NODE_FIRST = ("id", "type", "name")
#: Characters ruamel writes unescaped in plain/single-quoted style but reads back differently.
_NEEDS_DOUBLE_QUOTES = re.compile("[\x85\u2028\u2029]")


@dataclass
class Plan:
    """Files to write (path -> full text) and files to delete."""

    write: dict[Path, str] = field(default_factory=dict)
    delete: list[Path] = field(default_factory=list)


# -- rendering -------------------------------------------------------------------------------


def render(document: Document, existing_text: str | None, path: Path) -> str:
    """Text for ``path``: given text as is (once it parses); a mapping merged into the file.

    Raises :class:`FlowLoadError` for text that does not parse. The file's line endings
    (CRLF stays CRLF) and byte-order mark are kept; rendered text ends with a newline.
    """
    if isinstance(document, str):
        parse_text(document, str(path))
        return document
    new = _plain_document(document)
    is_json = path.suffix.lower() == ".json"
    if existing_text is None or not existing_text.strip():
        return _render_json(new, None) if is_json else _render_new_yaml(new, path)
    bom = "\ufeff" if existing_text.startswith("\ufeff") else ""
    body = existing_text.removeprefix("\ufeff")
    newline = "\r\n" if "\r\n" in body else "\n"
    body = body.replace("\r\n", "\n")
    if is_json:
        text = _render_json(new, body)
    else:
        try:
            text = _merge_yaml(new, body)
            if not _same(parse_text(text, str(path))[0], new):
                raise ValueError("the merged text does not read back as the document")
        except Exception as exc:  # any surprise in the merge: correct data beats kept comments
            log.warning("%s: rewriting the whole file, its comments could not be kept (%s)", path, exc)
            text = _render_new_yaml(new, path)
    if newline != "\n":
        text = text.replace("\n", newline)
    return bom + text


def _plain_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as plain JSON-like data; anything else is refused before touching a file."""

    def conv(value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, Mapping):
            return {str(k): conv(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            return [conv(v, f"{where}[{i}]") for i, v in enumerate(value)]
        raise FlowLoadError(f"{where}: cannot write a {type(value).__name__} into a flow file")

    out: dict[str, Any] = conv(document, "flow")
    return out


def _render_new_yaml(document: Mapping[str, Any], path: Path) -> str:
    """A new file: block style, nodes led by id/type and closed by wires, blank lines between parts."""
    root = _to_ruamel(_canonical(document, "root"), "root")
    assert isinstance(root, CommentedMap)
    for i, key in enumerate(root):
        value = root[key]
        if i and isinstance(value, CommentedMap | CommentedSeq) and value and not value.fa.flow_style():
            _set_leading(root, key, [_blank()])
    schema = _schema_comment(path)
    if schema is not None:
        root.ca.comment = [None, [_line(schema)]]
    return _dump(root, mapping=2, sequence=4, offset=2)


def _schema_comment(path: Path) -> str | None:
    """``# yaml-language-server: $schema=...`` for the repository's flow schema, if there is one."""
    folder = path.parent.resolve()
    for candidate_dir in (folder, *folder.parents):
        schema = candidate_dir / SCHEMA_PATH
        if schema.is_file():
            rel = Path(os.path.relpath(schema, folder)).as_posix()
            return f"# yaml-language-server: $schema={rel}"
        if (candidate_dir / ".git").exists():
            break  # the repository root: a schema further up belongs to something else
    return None


def _render_json(document: Mapping[str, Any], existing: str | None) -> str:
    """JSON in the existing file's key order and indent (2 spaces for a new file)."""
    indent: str | int = 2
    ensure_ascii = False
    data: Any = _canonical(document, "root")
    if existing is not None:
        try:
            old = json.loads(existing)
        except ValueError:
            old = None
        if isinstance(old, dict):
            data = _order_like(old, document, "root")
        found = re.search(r"^([ \t]+)\S", existing, re.MULTILINE)
        if found:
            indent = found.group(1)
        ensure_ascii = existing.isascii() and "\\u" in existing
    return json.dumps(data, indent=indent, ensure_ascii=ensure_ascii) + "\n"


# -- key order -------------------------------------------------------------------------------


def _child_ctx(ctx: str, key: str) -> str:
    """Where a value sits, for the conventions of its place (node keys, wires style)."""
    if ctx == "root":
        return {"nodes": "nodes", "connections": "connections"}.get(key, "other")
    if ctx == "connections":
        return "connection"
    if ctx == "node" and key == "wires":
        return "wires"
    if ctx == "wires":
        return "wires-port"
    return "other"


def _item_ctx(ctx: str) -> str:
    return "node" if ctx == "nodes" else "wires-port" if ctx == "wires" else "other"


def _canonical(value: Any, ctx: str) -> Any:
    """Plain data with readable key order: flow keys in schema order; node id/type/name first, wires last."""
    if isinstance(value, Mapping):
        keys = list(value)
        if ctx == "root":
            keys = [k for k in _ROOT_ORDER if k in value] + [k for k in keys if k not in _ROOT_ORDER]
        elif ctx == "node":
            first = [k for k in _NODE_FIRST if k in value]
            last = ["wires"] if "wires" in value else []
            keys = first + [k for k in keys if k not in first and k not in last] + last
        elif ctx == "connection" and "type" in value:
            keys = ["type"] + [k for k in keys if k != "type"]
        return {k: _canonical(value[k], _child_ctx(ctx, k)) for k in keys}
    if isinstance(value, list):
        return [_canonical(v, _item_ctx(ctx)) for v in value]
    return value


def _insert_pos(keys: list[str], new_keys: list[str], i: int, ctx: str) -> int:
    """Where new key ``new_keys[i]`` goes among ``keys``: after its predecessor in the new document.

    id/type stay first and a node's wires stay last.
    """
    key = new_keys[i]
    pos = 0
    if ctx == "root" and key in _ROOT_ORDER:  # schema order: env before connections before nodes
        rank = _ROOT_ORDER.index(key)
        before = [j for j, k in enumerate(keys) if k in _ROOT_ORDER and _ROOT_ORDER.index(k) < rank]
        return before[-1] + 1 if before else 0
    for prev in reversed(new_keys[:i]):
        if prev in keys:
            pos = keys.index(prev) + 1
            break
    if key not in ("id", "type"):
        lead = 0
        while lead < len(keys) and keys[lead] in ("id", "type"):
            lead += 1
        pos = max(pos, lead)
    if ctx == "node" and key != "wires" and keys and keys[-1] == "wires":
        pos = min(pos, len(keys) - 1)
    return pos


def _match(old: Sequence[Any], new: Sequence[Any], ctx: str) -> list[int | None]:
    """For each new item the index of the old item it updates (None: a new item).

    Items that all carry unique ids (nodes) match by id; other lists by content, so an
    unchanged item keeps its comments wherever it moves.
    """
    old_ids, new_ids = _ids(old), _ids(new)
    if old_ids is not None and new_ids is not None:
        where = {k: i for i, k in enumerate(old_ids)}
        return [where.get(k) for k in new_ids]
    out: list[int | None] = [None] * len(new)
    a = [_fingerprint(_plain(v)) for v in old]
    b = [_fingerprint(v) for v in new]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("equal", "replace"):
            for k in range(min(i2 - i1, j2 - j1)):
                out[j1 + k] = i1 + k
    return out


def _ids(items: Sequence[Any]) -> list[str] | None:
    ids: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            return None
        value = item.get("id")
        if not isinstance(value, str | int) or isinstance(value, bool):
            return None
        ids.append(str(value))
    return ids if ids and len(set(ids)) == len(ids) else None


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _order_like(old: Any, new: Any, ctx: str) -> Any:
    """``new`` as plain data with ``old``'s key order (JSON files); new keys placed as in YAML."""
    if isinstance(old, dict) and isinstance(new, Mapping):
        keys = [k for k in old if k in new]
        new_keys = [str(k) for k in new]
        for i, key in enumerate(new_keys):
            if key not in keys:
                keys.insert(_insert_pos(keys, new_keys, i, ctx), key)
        return {
            k: _order_like(old[k], new[k], _child_ctx(ctx, k))
            if k in old
            else _canonical(new[k], _child_ctx(ctx, k))
            for k in keys
        }
    if isinstance(old, list) and isinstance(new, list):
        matches = _match(old, new, ctx)
        item = _item_ctx(ctx)
        return [
            _canonical(v, item) if m is None else _order_like(old[m], v, item)
            for v, m in zip(new, matches, strict=True)
        ]
    return _canonical(new, ctx)


# -- YAML round trip -------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line that did not change
    return yaml


def _dump(root: Any, *, mapping: int, sequence: int, offset: int, explicit_start: bool = False) -> str:
    yaml = _yaml()
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.explicit_start = explicit_start
    buf = StringIO()
    yaml.dump(root, buf)
    return buf.getvalue()


def _merge_yaml(new: Mapping[str, Any], text: str) -> str:
    """Merge ``new`` into YAML ``text`` (LF line endings) and dump it in the text's own layout."""
    root = _yaml().load(text)
    if not isinstance(root, CommentedMap):
        raise ValueError("the file does not hold a mapping")
    tokens = list(YAML(typ="safe", pure=True).scan(text))
    if not re.search("[\r\x85\u2028\u2029]", text):  # line numbers are only trusted for \n breaks
        _normalize_comments(root, text, tokens)
    _dealias(root, set())
    _merge_map(root, new, "root")
    mapping, sequence, offset = _guess_indent(tokens)
    explicit = any(
        isinstance(t, DocumentStartToken) and t.start_mark.index != t.end_mark.index for t in tokens
    )
    return _dump(root, mapping=mapping, sequence=sequence, offset=offset, explicit_start=explicit)


def _guess_indent(tokens: list[Token]) -> tuple[int, int, int]:
    """The file's mapping indent, sequence indent and dash offset (ruamel's ``indent()``)."""
    maps: Counter[int] = Counter()
    seqs: Counter[int] = Counter()
    offsets: Counter[int] = Counter()
    key_col = 0
    for i, tok in enumerate(tokens):
        if isinstance(tok, KeyToken):
            key_col = tok.start_mark.column
        if not isinstance(tok, ValueToken) or i + 1 >= len(tokens):
            continue
        nxt = tokens[i + 1]
        if isinstance(nxt, BlockMappingStartToken) and nxt.start_mark.line > tok.start_mark.line:
            maps[nxt.start_mark.column - key_col] += 1
        elif isinstance(nxt, BlockSequenceStartToken | BlockEntryToken):
            dash = nxt if isinstance(nxt, BlockEntryToken) else tokens[i + 2]
            offsets[dash.start_mark.column - key_col] += 1
            after = tokens[tokens.index(dash, i) + 1]
            if after.start_mark.line == dash.start_mark.line:
                seqs[after.start_mark.column - key_col] += 1
    mapping = _most_common(maps, 2)
    offset = _most_common(offsets, 2)
    sequence = max(_most_common(seqs, offset + 2), offset + 2)
    return max(mapping, 1), sequence, max(offset, 0)


def _most_common(counts: Counter[int], default: int) -> int:
    positive = [(n, v) for v, n in counts.items() if v > 0]
    return max(positive)[1] if positive else default


# -- comments ----------------------------------------------------------------------------------
#
# ruamel attaches a comment to whatever precedes it (often the deepest last value of the
# previous node), which would make deleting or moving a node take its neighbour's comments.
# Before merging, every comment and blank line is re-attached to what follows it: as the
# "leading" lines of the next key or list item (ruamel's pre-comment slot), the document
# head or the document tail. End-of-line comments stay where they are.


def _line(raw: str) -> CommentToken:
    """A whole comment or blank line, written exactly as it was (indentation included)."""
    return CommentToken(raw + "\n", CommentMark(0))


def _blank() -> CommentToken:
    return CommentToken("\n", CommentMark(0))


def _is_blank(tok: CommentToken) -> bool:
    return not tok.value.strip()


def _eol(tok: Any) -> CommentToken | None:
    """Only the end-of-line part of a ruamel post-comment (the rest is re-attached as leading)."""
    if not isinstance(tok, CommentToken) or not tok.value.startswith("#"):
        return None
    return CommentToken(tok.value.split("\n", 1)[0] + "\n", CommentMark(tok.start_mark.column))


def _is_block(node: Any) -> bool:
    return isinstance(node, CommentedMap | CommentedSeq) and not node.fa.flow_style()


def _content_lines(text: str, tokens: list[Token]) -> set[int]:
    """Lines holding YAML content (0-based); every other line is blank or a comment."""
    lines = text.split("\n")
    out: set[int] = set()
    depth = 0
    flow_start = 0
    for tok in tokens:
        if isinstance(tok, StreamStartToken | StreamEndToken):
            continue
        start, end = tok.start_mark, tok.end_mark
        if isinstance(tok, FlowMappingStartToken | FlowSequenceStartToken):
            if depth == 0:
                flow_start = start.line
            depth += 1
        elif isinstance(tok, FlowMappingEndToken | FlowSequenceEndToken):
            depth -= 1
            if depth == 0:  # a comment inside a flow collection stays where ruamel put it
                out.update(range(flow_start, end.line + 1))
        if start.index == end.index:
            continue
        last = end.line if end.column > 0 else end.line - 1
        if isinstance(tok, ScalarToken) and tok.style in ("|", ">"):
            # trailing blank lines of a block scalar are not its content, unless kept (|+)
            while last > start.line and not lines[last].strip():
                last -= 1
            last += max(len(tok.value) - len(tok.value.rstrip("\n")) - 1, 0)
        out.update(range(start.line, max(last, start.line) + 1))
    return out


def _anchors(node: Any) -> Iterator[tuple[int, Any, Any]]:
    """(line, container, key) for every key and item of block collections, in document order."""
    if not _is_block(node):
        return
    if isinstance(node, CommentedMap):
        for key in node:
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                yield node.lc.key(key)[0], node, key
            yield from _anchors(node[key])
    else:
        for i, value in enumerate(node):
            with contextlib.suppress(KeyError, TypeError, AttributeError, IndexError):
                yield node.lc.item(i)[0], node, i
            yield from _anchors(value)


def _clear_comments(node: Any) -> None:
    """Drop all but end-of-line comments in block collections (they are re-attached as leading)."""
    if not _is_block(node):
        return
    ca = node.ca
    if ca.comment:
        eol = _eol(ca.comment[0])
        ca.comment = [eol, None] if eol else None
    for key, slots in list(ca.items.items()):
        if isinstance(node, CommentedMap):
            ca.items[key] = [None, None, _eol(slots[2] if len(slots) > 2 else None), None]
        else:
            ca.items[key] = [_eol(slots[0]), None]
    if ca.end:
        ca.end.clear()
    for value in node.values() if isinstance(node, CommentedMap) else node:
        _clear_comments(value)


def _normalize_comments(root: CommentedMap, text: str, tokens: list[Token]) -> None:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    content = _content_lines(text, tokens)
    if not content:
        return
    first, last = min(content), max(content)
    anchors = list(_anchors(root))
    _clear_comments(root)
    claimed = set(range(first)) | set(range(last + 1, len(lines)))
    leading: dict[int, tuple[Any, Any, list[int]]] = {}
    for line, container, key in anchors:
        if line in leading:
            continue  # a list item and its first key share a line: the item owns the comments
        block: list[int] = []
        j = line - 1
        if j in content and lines[j].strip() == "-":
            j -= 1  # "-" alone on its line, the item's content below it
        while j >= first and j not in content and j not in claimed:
            block.append(j)
            j -= 1
        claimed.update(block)
        leading[line] = (container, key, sorted(block))
    # Lines no anchor claimed (rare: between a key and an odd value) go to the next anchor.
    for n in sorted(set(range(first, last + 1)) - content - claimed):
        following = [ln for ln in leading if ln > n]
        if following:
            leading[min(following)][2].append(n)
    for container, key, block in leading.values():
        if block:
            _set_leading(container, key, [_line(lines[n]) for n in sorted(block)])
    root.ca.comment = [None, [_line(s) for s in lines[:first]]] if first else None
    if last + 1 < len(lines):
        root.ca.end.extend(_line(s) for s in lines[last + 1 :])


def _get_leading(container: Any, key: Any) -> list[CommentToken]:
    slots = container.ca.items.get(key)
    return list(slots[1] or []) if slots and len(slots) > 1 else []


def _set_leading(container: Any, key: Any, toks: list[CommentToken]) -> None:
    empty = [None, None, None, None] if isinstance(container, CommentedMap) else [None, None]
    slots = container.ca.items.setdefault(key, empty)
    slots[1] = toks or None


def _separator(toks: list[CommentToken]) -> int:
    """Blank lines that open a leading block (they separate; the comments after them describe)."""
    n = 0
    for tok in toks:
        if not _is_blank(tok):
            break
        n += 1
    return n


def _with_separator(toks: list[CommentToken], blanks: int) -> list[CommentToken]:
    rest = toks[_separator(toks) :]
    return [_blank() for _ in range(blanks)] + rest


def _common_separator(container: Any) -> int:
    """The usual blank-line gap between a collection's items (after the first)."""
    keys = list(container) if isinstance(container, CommentedMap) else list(range(len(container)))
    seps = [_separator(_get_leading(container, k)) for k in keys[1:]]
    if not seps:
        return 0
    counts = Counter(seps)
    top = max(counts.values())
    return next(s for s in reversed(seps) if counts[s] == top)


# -- merging -----------------------------------------------------------------------------------


def _dealias(node: Any, seen: set[int]) -> None:
    """Give each place its own copy of an aliased collection, so an edit changes one place."""
    if not isinstance(node, CommentedMap | CommentedSeq):
        return
    seen.add(id(node))
    items = list(node.items()) if isinstance(node, CommentedMap) else list(enumerate(node))
    for key, value in items:
        if isinstance(value, CommentedMap | CommentedSeq):
            if id(value) in seen:
                value = copy.deepcopy(value)
                _strip(value)
                node[key] = value
            _dealias(value, seen)


def _strip(node: Any) -> None:
    """No comments or anchors on a copy: they belong to the original."""
    if isinstance(node, CommentedBase):
        node.ca.comment = None
        node.ca.items.clear()
        setattr(node, Anchor.attrib, Anchor())
    if isinstance(node, CommentedMap):
        for value in node.values():
            _strip(value)
    elif isinstance(node, CommentedSeq):
        for value in node:
            _strip(value)


def _merge(old: Any, new: Any, ctx: str) -> Any:
    """The value to store for ``new`` where ``old`` was: ``old`` updated in place when possible."""
    if isinstance(new, Mapping) and isinstance(old, CommentedMap):
        _merge_map(old, new, ctx)
        return old
    if isinstance(new, list) and isinstance(old, CommentedSeq):
        _merge_seq(old, new, ctx)
        return old
    if _same(_plain(old), new):
        return old
    if isinstance(new, Mapping | list):
        fresh = _to_ruamel(_canonical(new, ctx), ctx)
        if isinstance(old, CommentedMap | CommentedSeq) and old.fa.flow_style():
            fresh.fa.set_flow_style()
        return fresh
    return _scalar(old, new)


def _kind(value: Any) -> str:
    if isinstance(value, CommentedMap | CommentedSeq):
        return "flow" if value.fa.flow_style() else "block"
    return "scalar"


def _merge_map(old: CommentedMap, new: Mapping[str, Any], ctx: str) -> None:
    before = list(old)
    first_sep = _separator(_get_leading(old, before[0])) if before else 0
    common = _common_separator(old)
    by_text = {str(k): k for k in old}
    for key in before:
        if str(key) not in new:
            del old[key]
            old.ca.items.pop(key, None)
    new_keys = [str(k) for k in new]
    for i, key in enumerate(new_keys):
        child = _child_ctx(ctx, key)
        if key in by_text and by_text[key] in old:
            okey = by_text[key]
            current = old[okey]
            merged = _merge(current, new[key], child)
            if merged is not current:
                if type(merged) is str:  # else ruamel re-applies the old quoting or block style
                    merged = PlainScalarString(merged)
                old[okey] = merged
                if _kind(current) != _kind(merged) and okey in old.ca.items:
                    old.ca.items[okey][2] = None  # an end-of-line comment does not fit the new shape
        else:
            pos = _insert_pos([str(k) for k in old], new_keys, i, ctx)
            old.insert(pos, _key(key), _to_ruamel(_canonical(new[key], child), child))
    after = list(old)
    if before and after and after[0] != before[0]:
        _set_leading(old, after[0], _with_separator(_get_leading(old, after[0]), first_sep))
        if before[0] in old:
            _set_leading(old, before[0], _with_separator(_get_leading(old, before[0]), common))


def _merge_seq(old: CommentedSeq, new: list[Any], ctx: str) -> None:
    items = list(old)
    slots = {i: list(old.ca.items.get(i) or [None, None]) for i in range(len(items))}
    first_sep = _separator(_get_leading(old, 0)) if items else 0
    common = _common_separator(old)
    item_ctx = _item_ctx(ctx)
    values: list[Any] = []
    comments: list[list[Any]] = []
    for j, (value, m) in enumerate(zip(new, _match(items, new, ctx), strict=True)):
        if m is None:
            values.append(_to_ruamel(_canonical(value, item_ctx), item_ctx))
            comments.append([None, [_blank() for _ in range(common if j else first_sep)] or None])
            continue
        merged = _merge(items[m], value, item_ctx)
        slot = slots[m]
        if _kind(merged) != _kind(items[m]):
            slot[0] = None
        toks = list(slot[1] or [])
        if j == 0:
            toks = _with_separator(toks, first_sep)
        elif m == 0:
            toks = _with_separator(toks, common)
        values.append(merged)
        comments.append([slot[0], toks or None])
    old.ca.items.clear()
    list.__delitem__(old, slice(None))
    list.extend(old, values)
    for j, slot in enumerate(comments):
        if slot[0] is not None or slot[1]:
            old.ca.items[j] = slot


def _key(key: str) -> Any:
    """A new mapping key, quoted where plain text would mean something else."""
    if key == "<<" or _NEEDS_DOUBLE_QUOTES.search(key):
        return DoubleQuotedScalarString(key)
    return key


def _to_ruamel(value: Any, ctx: str) -> Any:
    """Plain (canonically ordered) data as ruamel nodes in the house style."""
    if isinstance(value, dict):
        cm = CommentedMap()
        for k, v in value.items():
            cm[_key(k)] = _to_ruamel(v, _child_ctx(ctx, k))
        if ctx == "wires" and _short(value):
            cm.fa.set_flow_style()
        return cm
    if isinstance(value, list):
        item = _item_ctx(ctx)
        cs = CommentedSeq(_to_ruamel(v, item) for v in value)
        if ctx in ("wires", "wires-port") and _short(value):
            cs.fa.set_flow_style()
        if ctx == "nodes":
            for i in range(1, len(cs)):
                cs.ca.items[i] = [None, [_blank()]]
        return cs
    if isinstance(value, str):
        return _text(value)
    return value


def _short(value: Any) -> bool:
    scalars = all(
        not isinstance(v, dict | list)
        or (isinstance(v, list) and all(not isinstance(x, dict | list) for x in v))
        for v in (value.values() if isinstance(value, dict) else value)
    )
    return scalars and len(json.dumps(value)) <= FLOW_WIRES_WIDTH


def _block_ok(text: str) -> bool:
    """Whether ruamel writes ``text`` as a literal/folded block and reads the same text back."""
    return all(c in "\n\t" or (c.isprintable() and c not in "\u2028\u2029") for c in text)


def _text(value: str) -> Any:
    if _NEEDS_DOUBLE_QUOTES.search(value):
        return DoubleQuotedScalarString(value)
    if "\n" in value and _block_ok(value):
        return LiteralScalarString(value)
    return value


def _scalar(old: Any, new: Any) -> Any:
    """A changed scalar in the old one's style where that style can hold the new value."""
    if isinstance(new, str):
        if _NEEDS_DOUBLE_QUOTES.search(new):
            return DoubleQuotedScalarString(new)
        if isinstance(old, LiteralScalarString) and _block_ok(new):
            return LiteralScalarString(new)
        if isinstance(old, FoldedScalarString) and _block_ok(new):
            folded = FoldedScalarString(new)
            folded.fold_pos = _folds(new, _fold_width(old), _kept_folds(old, new))
            return folded
        if isinstance(old, DoubleQuotedScalarString):
            return DoubleQuotedScalarString(new)
        if isinstance(old, SingleQuotedScalarString):
            return SingleQuotedScalarString(new)
        return _text(new)
    if (
        isinstance(new, int)
        and not isinstance(new, bool)
        and new >= 0
        and isinstance(old, HexInt | HexCapsInt | OctalInt | BinaryInt)
    ):
        return type(old)(new)
    return new


def _fold_width(old: FoldedScalarString) -> int:
    """The longest line of the old folded text: the new text wraps the same way."""
    positions = list(getattr(old, "fold_pos", None) or [])
    if not positions:
        return FOLD_WIDTH
    widest, start = 0, 0
    for p in positions:
        line_start = old.rfind("\n", 0, p) + 1
        widest = max(widest, p - max(start, line_start))
        start = p + 1
    return max(widest, 40)


def _kept_folds(old: FoldedScalarString, new: str) -> set[int]:
    """The old line breaks that fall in unchanged text, moved to their place in the new text."""
    kept: set[int] = set()
    positions = set(getattr(old, "fold_pos", None) or [])
    for a, b, size in difflib.SequenceMatcher(None, str(old), new, autojunk=False).get_matching_blocks():
        kept.update(b + p - a for p in positions if a <= p < a + size)
    return kept


def _folds(text: str, width: int, keep: AbstractSet[int] = frozenset()) -> list[int]:
    """Positions of single spaces to break a folded scalar at: ``keep`` where possible, then
    wherever a line would pass ``width``."""
    out: list[int] = []
    offset = 0
    for line in text.split("\n"):
        if line and not line[0].isspace():
            start = 0
            candidate = -1
            for i in range(1, len(line) - 1):
                if line[i] != " " or line[i - 1] == " " or line[i + 1] == " ":
                    continue
                if i - start > width and candidate > start:
                    out.append(offset + candidate)
                    start = candidate + 1
                if offset + i in keep:
                    out.append(offset + i)
                    start, candidate = i + 1, -1
                    continue
                candidate = i
            if len(line) - start > width and candidate > start:
                out.append(offset + candidate)
        offset += len(line) + 1
    return out


def _plain(value: Any) -> Any:
    """ruamel data as the loader reads it (plain JSON-like Python)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else value


def _same(a: Any, b: Any) -> bool:
    """Equal as data and as types: ``1``, ``1.0`` and ``true`` are three different values."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return (
            isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and (a == b or (a != a and b != b))
    return type(a) is type(b) and a == b


# -- planning ----------------------------------------------------------------------------------


def plan(
    current: Mapping[str, Path],
    documents: Mapping[str, Document],
    flow_dir: Path,
    *,
    mode: Literal["full", "modified"] = "modified",
    deleted: Sequence[str] = (),
) -> Plan:
    """Decide the file operations of a deploy (flow id -> document).

    ``documents`` is keyed by the id the flow runs under now. A flow keeps its file even
    when its document carries a new id; a new flow, or one whose file is gone, is written
    to ``<flow_dir>/<id>.yaml``. Raises :class:`FlowValidationError` when two flows would
    share a file or a new flow would overwrite a file that holds no running flow, and
    :class:`FlowLoadError` for a document that does not parse.
    """
    from engine.validation import Issue

    out = Plan()
    gone = set(deleted) - set(documents)
    if mode == "full":
        gone |= set(current) - set(documents)
    owners = {_same_file(p): fid for fid, p in current.items()}
    claimed: dict[Path, str] = {}
    issues: list[Issue] = []
    for flow_id, doc in documents.items():
        doc_id = _document_id(doc, flow_id)
        path = current.get(flow_id)
        if path is None or not path.exists():
            path = flow_dir / f"{_file_stem(doc_id)}.yaml"
        real = _same_file(path)
        other = claimed.get(real)
        owner = owners.get(real)
        if other is not None:
            issues.append(
                Issue("error", f"flows {other} and {flow_id} would both be written to {path}", "file")
            )
            continue
        if owner is not None and owner != flow_id and owner not in gone and owner not in documents:
            issues.append(
                Issue(
                    "error",
                    f"{path} holds flow {owner}; flow {flow_id} needs another file",
                    "file",
                    flow=flow_id,
                )
            )
            continue
        if owner is None and flow_id not in current and path.exists():
            issues.append(
                Issue(
                    "error",
                    f"{path} exists and holds no running flow; not overwriting it",
                    "file",
                    flow=flow_id,
                )
            )
            continue
        claimed[real] = flow_id
        existing = path.read_bytes().decode("utf-8") if path.exists() else None
        out.write[path] = render(doc, existing, path)
    if issues:
        raise FlowValidationError(issues)
    for flow_id in sorted(gone):
        path = current.get(flow_id)
        if path is not None and _same_file(path) not in claimed:
            out.delete.append(path)
    return out


def _same_file(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _document_id(doc: Document, default: str) -> str:
    data = parse_text(doc, "<document>")[0] if isinstance(doc, str) else doc
    value = data.get("id") if isinstance(data, Mapping) else None
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return str(value)
    return default


def _file_stem(flow_id: str) -> str:
    """A safe file name for a flow id: no directories, no hidden files."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", flow_id).strip(".-")
    return stem or "flow"


# -- writing -----------------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, line endings as given) so readers see old or new.

    The temporary file is a hidden sibling (flow loaders skip it), gets the original's
    permission bits (a new file: 0666 less the umask), is fsync'd before the rename and
    the directory after it. A symlink is written through to its target.
    """
    target = _same_file(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    data = text.encode("utf-8")
    tmp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            if mode is not None:
                os.chmod(tmp, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or unlink durable (POSIX; Windows cannot open a directory for this)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply(p: Plan) -> None:
    """Write, then delete. Each file changes atomically; the set of files does not."""
    for path, text in p.write.items():
        atomic_write(path, text)
    for path in p.delete:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
