"""Flows: read them as written, validate edits, deploy them (files first, then the same
reload a saved file triggers).

Every write names the revision it started from (``revision`` in the body, an ``If-Match``
header or a ``revision`` query parameter) and gets 409 if another deployment is running
by then, as Node-RED's v2 API does. Writing flow files changes the running flows, so
every write is a deploy and needs the admin role; editors validate.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from editor_api.app import AUTH_RESPONSES, Admin, ApiState, Editor, Reader, State
from editor_api.models import (
    Conflict,
    DeployRequest,
    DeployResult,
    Detail,
    Flows,
    OneFlow,
    RefusedDeploy,
    ValidateRequest,
    ValidationReport,
)
from engine import flowfiles
from engine.cli import validation_report
from engine.errors import DeployConflict, FlowLoadError, FlowValidationError
from engine.loader import parse_text
from engine.model import FlowSpec
from engine.schema import ID_PATTERN
from engine.validation import Issue, load_documents, validate_deployment

router = APIRouter(prefix="/api", tags=["flows"])

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
Mode = Literal["full", "modified"]
Document = str | dict[str, Any]
_ID = re.compile(ID_PATTERN)

_FLOW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The flow as YAML text (comments are kept), as a JSON flow document, or as "
        "JSON `{text, revision}` / `{document, revision}`. Without a `revision` field, send the "
        "revision in an `If-Match` header or the `revision` query parameter.",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "A flow document (see docs/flow.schema.json)."},
                        {
                            "type": "object",
                            "properties": {
                                "revision": {"type": "string"},
                                "text": {"type": "string"},
                                "document": {"type": "object"},
                            },
                        },
                    ]
                }
            },
        },
    }
}
_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    400: {"model": Detail, "description": "Malformed body or flow id."},
    409: {"model": Conflict, "description": "Another deployment is running than the edit started from."},
    413: {"description": "Body too large."},
    415: {"model": Detail, "description": "Neither JSON nor YAML."},
    422: {"model": RefusedDeploy, "description": "Invalid: nothing written, the running flows stay."},
    428: {"model": Detail, "description": "No revision given."},
}


# -- reading -----------------------------------------------------------------------------------


def _flow_view(state: ApiState, flow: FlowSpec) -> dict[str, Any]:
    text: str | None = None
    try:
        text = Path(flow.file).read_text(encoding="utf-8")
        if parse_text(text, flow.file)[0] != flow.document:
            text = None  # edited since it was loaded (a refused reload): not what runs
    except (OSError, FlowLoadError):
        text = None
    return {
        "id": flow.id,
        "label": flow.label,
        "description": flow.description,
        "file": state.relative(flow.file),
        "document": flow.document,
        "text": text,
    }


def _running(state: ApiState) -> list[FlowSpec]:
    v = state.supervisor.validated
    return list(v.deployment.flows) if v is not None else []


def _etag(revision: str | None) -> dict[str, str]:
    return {"ETag": f'"{revision}"'} if revision else {}


@router.get("/flows", response_model=Flows, responses=AUTH_RESPONSES, summary="All flows and the revision")
async def list_flows(state: State, _who: Reader) -> Response:
    rev = state.supervisor.revision
    body = {"revision": rev, "flows": [_flow_view(state, f) for f in _running(state)]}
    return state.json(body, headers=_etag(rev))


@router.get(
    "/flows/{flow_id}",
    response_model=OneFlow,
    responses={**AUTH_RESPONSES, 404: {"model": Detail}},
    summary="One flow as written",
)
async def get_flow(flow_id: str, state: State, _who: Reader) -> Response:
    flow = next((f for f in _running(state) if f.id == flow_id), None)
    if flow is None:
        raise HTTPException(404, f"no flow {flow_id!r} is running")
    rev = state.supervisor.revision
    return state.json({**_flow_view(state, flow), "revision": rev}, headers=_etag(rev))


# -- request bodies ------------------------------------------------------------------------------


def _revision_from(request: Request) -> str | None:
    value = request.headers.get("if-match") or request.query_params.get("revision")
    if not value:
        return None
    return value.strip().removeprefix("W/").strip('"')


def _flow_id_of(doc: Document) -> str | None:
    if isinstance(doc, dict):
        value = doc.get("id")
        return value if isinstance(value, str) else None
    try:
        data, _ = parse_text(doc, "flow.yaml")
    except FlowLoadError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def flow_item(item: Any, default_id: str | None = None) -> tuple[str, Document]:
    """(flow id, document) from ``{id?, text}``, ``{id?, document}`` or a flow document itself.

    The id is the flow's running id (``id`` beside the text, else ``default_id`` from the
    URL, else the document's own); a document with another id renames the flow in place.
    """
    if not isinstance(item, dict):
        raise HTTPException(400, "a flow must be a JSON object")
    doc: Document
    given: Any = default_id
    if "text" in item or "document" in item:
        extra = sorted(set(item) - {"id", "text", "document", "revision"})
        if extra:
            raise HTTPException(400, f"unexpected key {extra[0]!r} beside text/document")
        if "text" in item and "document" in item:
            raise HTTPException(400, "give either text or document, not both")
        doc = item["text"] if "text" in item else item["document"]
        if "text" in item and not isinstance(doc, str):
            raise HTTPException(400, "text must be a string of YAML or JSON")
        if "document" in item and not isinstance(doc, dict):
            raise HTTPException(400, "document must be a JSON object")
        if item.get("id") is not None:
            if default_id is not None and item["id"] != default_id:
                raise HTTPException(400, f"id {item['id']!r} does not match the URL's {default_id!r}")
            given = item["id"]
    else:
        doc = item
    flow_id = given if given is not None else _flow_id_of(doc)
    if flow_id is None and isinstance(doc, str):
        raise HTTPException(400, "the flow has no id: give `id` beside the text, or a text that parses")
    if not isinstance(flow_id, str) or not flow_id:
        raise HTTPException(400, "the flow has no id (give `id: ...` in the flow)")
    if not _ID.match(flow_id):
        raise HTTPException(400, f"invalid flow id {flow_id!r}: letters, digits and _ . : - only")
    return flow_id, doc


async def _single_flow(request: Request, path_id: str | None = None) -> tuple[str, Document, str | None]:
    """Parse a one-flow body (YAML text or JSON); returns (flow id, document, revision)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw.strip():
        raise HTTPException(400, "empty request body: send the flow as YAML or JSON")
    revision: Any = None
    if ctype in YAML_TYPES:
        try:
            item: Any = {"text": raw.decode("utf-8")}
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not UTF-8 text") from None
    elif ctype in ("application/json", "") or ctype.endswith("+json"):
        try:
            item = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
        if isinstance(item, dict) and ("text" in item or "document" in item):
            revision = item.get("revision")
            if revision is not None and not isinstance(revision, str):
                raise HTTPException(400, "revision must be a string")
    else:
        raise HTTPException(
            415, f"unsupported content type {ctype!r}: use application/json or application/yaml"
        )
    flow_id, doc = flow_item(item, path_id)
    return flow_id, doc, revision or _revision_from(request)


def _documents(items: list[dict[str, Any]]) -> dict[str, Document]:
    out: dict[str, Document] = {}
    for item in items:
        flow_id, doc = flow_item(item)
        if flow_id in out:
            raise HTTPException(400, f"flow {flow_id!r} is given twice")
        out[flow_id] = doc
    return out


# -- validate and deploy -----------------------------------------------------------------------


# -- validate and deploy -----------------------------------------------------------------------


class Refused(Exception):
    """422 with a validation report: the edit is invalid, nothing was written."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("refused")
        self.body = body


def _target(state: ApiState, flow_id: str) -> Path:
    return state.supervisor.flow_files().get(flow_id) or state.supervisor.flow_dir() / f"{flow_id}.yaml"


def _current_texts(state: ApiState, skip: set[Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in state.supervisor.flow_files().values():
        if path not in skip:
            try:
                texts[str(path)] = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise HTTPException(500, f"cannot read {path.name}: {exc.strerror or exc}") from None
    return texts


def _check_parse(state: ApiState, documents: dict[str, Document]) -> None:
    """A text that does not parse is refused with its file and line, like any invalid flow."""
    broken = False
    for doc in documents.values():
        if isinstance(doc, str):
            try:
                parse_text(doc, "flow.yaml")
            except FlowLoadError:
                broken = True
    if not broken:
        return
    texts = {
        str(_target(state, fid)): doc if isinstance(doc, str) else json.dumps(doc)
        for fid, doc in documents.items()
    }
    texts.update(_current_texts(state, {Path(t) for t in texts}))
    raise Refused({"ok": False, **_report(state, texts)})


def _plan_conflict(state: ApiState, exc: FlowValidationError) -> HTTPException:
    prefix = f"{state.supervisor.flow_dir()}{os.sep}"
    messages = [i.message.replace(prefix, "") for i in exc.issues if i.severity == "error"]
    return HTTPException(409, "; ".join(messages) or "the flow files cannot be written")


def _texts(state: ApiState, documents: dict[str, Document], mode: Mode, deleted: list[str]) -> dict[str, str]:
    """The deployment a deploy would write (file -> text), as the supervisor validates it."""
    _check_parse(state, documents)
    try:
        plan = flowfiles.plan(
            state.supervisor.flow_files(), documents, state.supervisor.flow_dir(), mode=mode, deleted=deleted
        )
    except FlowValidationError as exc:
        raise _plan_conflict(state, exc) from None
    except FlowLoadError as exc:
        raise HTTPException(400, str(exc)) from None
    texts = {str(path): text for path, text in plan.write.items()}
    texts.update(_current_texts(state, set(plan.write) | set(plan.delete)))
    return texts


def _report(state: ApiState, texts: dict[str, str], issues: list[Issue] | None = None) -> dict[str, Any]:
    sup = state.supervisor
    deployment, load_issues = load_documents(texts.items())
    if issues is None:
        _validated, issues = validate_deployment(
            deployment, sup.registry, environ=sup.environ, prior_issues=load_issues
        )
    return validation_report(deployment, issues, sup.registry, relative=state.relative)


async def _deploy(
    state: ApiState,
    documents: dict[str, Document],
    revision: str | None,
    *,
    mode: Mode = "modified",
    deleted: list[str] | None = None,
    created: bool = False,
) -> Response:
    sup = state.supervisor
    if revision is None:
        raise HTTPException(
            428, "send the revision you started from (`revision` field, If-Match header or ?revision=)"
        )
    if sup.engine is None:
        raise HTTPException(503, "the flows are not running yet")
    deleted = deleted or []
    try:
        if revision != sup.revision:
            raise DeployConflict(sup.revision, revision)
        texts = _texts(state, documents, mode, deleted)
        # flowfiles.plan renders parsed documents itself (a round trip into the file's text);
        # Supervisor.deploy is annotated for texts only but hands the documents to the plan as they are.
        result = await sup.deploy(
            cast("Mapping[str, str]", documents), base_revision=revision, mode=mode, deleted=deleted
        )
    except DeployConflict as exc:
        return state.json({"detail": str(exc), "revision": exc.running, "base_revision": exc.base}, 409)
    except FlowValidationError as exc:
        raise _plan_conflict(state, exc) from None
    except FlowLoadError as exc:
        raise HTTPException(400, str(exc)) from None
    except OSError as exc:
        raise HTTPException(500, f"cannot write the flow files: {exc.strerror or exc}") from None
    if not result.ok:
        report = _report(state, texts, result.issues)
        return state.json({"ok": False, **report, "result": result.to_dict()}, 422)
    body = {"ok": True, "revision": result.revision, "result": result.to_dict()}
    return state.json(body, 201 if created else 200, headers=_etag(result.revision))


@router.post(
    "/validate",
    response_model=ValidationReport,
    responses={**AUTH_RESPONSES, 400: {"model": Detail}},
    summary="Validate flows without deploying",
    openapi_extra=_FLOW_BODY,
)
async def validate(request: Request, state: State, _who: Editor) -> Response:
    """Checks one flow (any form a flow write takes) or `{flows, mode, deleted}` together with
    the running deployment, exactly as a deploy would; answers `klimaflow validate --format json`'s
    shape with status 200 whether or not the flows are valid."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    mode: Mode = "modified"
    deleted: list[str] = []
    if ctype not in YAML_TYPES:
        try:
            data = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
        if isinstance(data, dict) and "flows" in data and "nodes" not in data:
            try:
                req = ValidateRequest.model_validate(data)
            except ValueError as exc:
                raise HTTPException(400, f"invalid request: {str(exc).splitlines()[0]}") from None
            texts = _texts(state, _documents(req.flows), req.mode, req.deleted)
            return state.json(_report(state, texts))
    flow_id, doc, _rev = await _single_flow(request)
    texts = _texts(state, {flow_id: doc}, mode, deleted)
    return state.json(_report(state, texts))


@router.post(
    "/deploy",
    response_model=DeployResult,
    responses=_WRITE_RESPONSES,
    summary="Deploy flows (full or modified)",
)
async def deploy(req: DeployRequest, state: State, _who: Admin) -> Response:
    """Validates the new deployment, writes the flow files (atomically) and reloads exactly as a
    saved file does. `full` replaces the deployment (running flows not listed are deleted);
    `modified` changes only the listed flows and deletes those in `deleted`."""
    documents = _documents(req.flows)
    unknown = [d for d in req.deleted if d not in state.supervisor.flow_files()]
    if unknown:
        raise HTTPException(404, f"no flow {unknown[0]!r} to delete")
    return await _deploy(state, documents, req.revision, mode=req.mode, deleted=req.deleted)


@router.post(
    "/flows",
    response_model=DeployResult,
    status_code=201,
    responses=_WRITE_RESPONSES,
    summary="Create a flow",
    openapi_extra=_FLOW_BODY,
)
async def create_flow(request: Request, state: State, _who: Admin) -> Response:
    """Writes a new flow file `ID.yaml` in the flow directory and deploys it."""
    flow_id, doc, revision = await _single_flow(request)
    if flow_id in state.supervisor.flow_files():
        raise HTTPException(409, f"flow {flow_id!r} exists: use PUT /api/flows/{flow_id}")
    return await _deploy(state, {flow_id: doc}, revision, created=True)


@router.put(
    "/flows/{flow_id}",
    response_model=DeployResult,
    responses={**_WRITE_RESPONSES, 404: {"model": Detail}},
    summary="Replace a flow",
    openapi_extra=_FLOW_BODY,
)
async def put_flow(flow_id: str, request: Request, state: State, _who: Admin) -> Response:
    """Rewrites the flow's file (YAML text is written as sent, comments and all) and deploys it."""
    if flow_id not in state.supervisor.flow_files():
        raise HTTPException(404, f"no flow {flow_id!r} is running (POST /api/flows creates one)")
    fid, doc, revision = await _single_flow(request, flow_id)
    return await _deploy(state, {fid: doc}, revision)


@router.delete(
    "/flows/{flow_id}",
    response_model=DeployResult,
    responses={**_WRITE_RESPONSES, 404: {"model": Detail}},
    summary="Delete a flow",
)
async def delete_flow(flow_id: str, request: Request, state: State, _who: Admin) -> Response:
    """Deletes the flow's file and deploys the rest (revision in If-Match or ?revision=)."""
    if flow_id not in state.supervisor.flow_files():
        raise HTTPException(404, f"no flow {flow_id!r} is running")
    return await _deploy(state, {}, _revision_from(request), deleted=[flow_id])
