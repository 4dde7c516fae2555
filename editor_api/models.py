"""Request and response models: they document the API in OpenAPI (``/docs``, ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Detail(BaseModel):
    detail: str = Field(description="What went wrong, in one sentence.")


class Conflict(BaseModel):
    """409: the deployment changed since the client read it."""

    detail: str = Field(description="What to do: reload the flows and apply the edit again.")
    revision: str | None = Field(description="The running revision.")
    base_revision: str | None = Field(description="The revision the edit started from.")


class Flow(BaseModel):
    """A flow as written in its file: ``${ENV}`` references stay references."""

    id: str = Field(description="Flow id.")
    label: str = Field(description="Human label (the id if none is written).")
    description: str | None = Field(description="Description from the file.")
    file: str | None = Field(description="File name, relative to the flow directory.")
    document: dict[str, Any] = Field(description="The parsed flow document.")
    text: str | None = Field(
        description="The file's text with its comments; null if the file changed since it was loaded."
    )


class Flows(BaseModel):
    revision: str | None = Field(description="Content hash of the running deployment; send it back to edit.")
    flows: list[Flow] = Field(description="Every running flow.")


class OneFlow(Flow):
    revision: str | None = Field(description="Content hash of the running deployment.")


class IssueModel(BaseModel):
    severity: Literal["error", "warning"]
    message: str
    code: str
    file: str | None
    line: int | None
    flow: str | None
    node: str | None
    connection: str | None
    field: str | None


class Summary(BaseModel):
    valid: bool
    errors: int
    warnings: int
    flows: int
    nodes: int
    load_errors: dict[str, str]


class ValidationReport(BaseModel):
    """The shape of ``klimaflow validate --format json``."""

    issues: list[IssueModel]
    summary: Summary


class DeployResult(BaseModel):
    ok: bool = Field(description="Whether the deployment was applied.")
    revision: str | None = Field(description="The running revision afterwards.")
    result: dict[str, Any] = Field(
        description="The reload result (diff, duration, warnings), as in /api/status."
    )


class RefusedDeploy(ValidationReport):
    """422: the new deployment is invalid; nothing was written and the old flows keep running."""

    ok: Literal[False] = False
    result: dict[str, Any] | None = Field(default=None, description="The refused reload result.")


class DeployRequest(_Model):
    """Node-RED's v2 deploy: the revision the edit started from and the flows."""

    revision: str = Field(description="The revision the client read (409 if another is running).")
    mode: Literal["full", "modified"] = Field(
        default="modified",
        description="full: `flows` is the whole deployment (running flows not listed are deleted); "
        "modified: only the listed flows change.",
    )
    flows: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each flow as `{text: YAML}` (comments kept), `{document: {...}}`, or the flow document itself.",
    )
    deleted: list[str] = Field(default_factory=list, description="Flow ids to delete (modified mode).")


class ValidateRequest(_Model):
    """Several flows to check together with the running deployment, as a deploy would."""

    mode: Literal["full", "modified"] = "modified"
    flows: list[dict[str, Any]] = Field(
        default_factory=list, description="Flows, in the same forms as for a deploy."
    )
    deleted: list[str] = Field(default_factory=list)


class NodeTypes(BaseModel):
    nodes: list[dict[str, Any]] = Field(
        description="Node types: type, category, summary, description, inputs, outputs, color, icon, "
        "config_schema (JSON Schema of the config; the editor renders its form from it)."
    )
    connections: list[dict[str, Any]] = Field(description="Connection types with their config schema.")
    load_errors: dict[str, str] = Field(description="Types that are installed but failed to import.")


class Status(BaseModel):
    revision: str | None
    ready: bool
    reloads: int = Field(description="Deployments applied since start.")
    last_result: dict[str, Any] | None = Field(
        description="Last reload or deploy: time, diff, duration, errors."
    )
    history: list[dict[str, Any]] = Field(description="Recent reload results, newest first.")
    unhandled_errors: int
    undrained: int
    nodes: list[dict[str, Any]] = Field(description="Every node's status and counters.")


class DebugToggle(_Model):
    active: bool = Field(description="Whether the debug node shows (and streams) messages.")


class DebugNodeState(BaseModel):
    id: str
    flow: str
    active: bool


class InjectRequest(_Model):
    payload: Any = Field(default=None, description="Payload to send instead of the node's configured one.")


class LoginRequest(_Model):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1000)


class LoginResponse(BaseModel):
    token: str = Field(description="Bearer token; shown only here.")
    id: str = Field(description="Token id, for revocation.")
    role: str
    expires_at: float = Field(description="Unix time.")


class RevokeRequest(_Model):
    token: str | None = Field(default=None, description="Token to revoke; the caller's own if omitted.")


class TokenInfo(BaseModel):
    id: str
    subject: str
    role: str
    kind: str
    created_at: float
    expires_at: float | None
    revoked: bool


class Me(BaseModel):
    subject: str
    role: str
    via: str
