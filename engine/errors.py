"""The klimaflow exception hierarchy.

Catch nodes route errors by class name, so every error the engine or a built-in
node raises belongs to exactly one documented branch of this tree::

    KlimaflowError
    ├── FlowError                  a flow document is not acceptable
    │   ├── FlowLoadError          file unreadable / not YAML or JSON
    │   ├── FlowValidationError    carries a list of Issue objects
    │   └── DeployConflict         the deployment changed since the client read it (HTTP 409)
    ├── ConfigError                a node or connection config is wrong at start time
    ├── SecretError                ${file:...} or ${VAR} could not be resolved
    ├── NodeError                  raised while a node handles a message
    │   ├── MessageError           the message itself is unusable (bad JSON, missing field)
    │   │   ├── DecodeError        payload could not be decoded
    │   │   └── RecordRejected     one row/record of an imported file is unusable (file:line: reason)
    │   ├── ExpressionError        a JSONata / Jinja2 / regex expression failed
    │   ├── FunctionError          a user function (``python`` node) raised or timed out
    │   └── TransientError         worth retrying: connection refused, timeout, 5xx, 429
    │       └── ServiceUnavailable the remote service is down
    └── EngineError                the runtime itself was misused (start twice, ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.validation import Issue


class KlimaflowError(Exception):
    """Base of everything klimaflow raises on purpose."""


class FlowError(KlimaflowError):
    """A flow document cannot be used."""


class FlowLoadError(FlowError):
    """A flow file could not be read or parsed; ``file`` and ``line`` locate it."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class FlowValidationError(FlowError):
    """A deployment failed validation; ``issues`` lists every error and warning found."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        errors = [i for i in issues if i.severity == "error"]
        lines = "\n".join(i.format() for i in errors) or "invalid flow"
        super().__init__(f"{len(errors)} error(s):\n{lines}")


class DeployConflict(FlowError):
    """A deploy started from a revision that is no longer the running one."""

    def __init__(self, running: str | None, base: str | None) -> None:
        self.running = running
        self.base = base
        super().__init__(
            f"the running deployment is revision {running}, but this edit started from {base}: "
            "reload the flows and apply the edit again"
        )


class ConfigError(KlimaflowError):
    """A node or connection could not be set up from its (already validated) config."""


class SecretError(KlimaflowError):
    """An environment or file reference in a flow could not be resolved."""


class NodeError(KlimaflowError):
    """Raised by a node while handling a message; routed to catch nodes."""


class MessageError(NodeError):
    """The message cannot be processed as it is (wrong shape, missing property)."""


class DecodeError(MessageError):
    """The payload could not be decoded (malformed JSON, bad base64, bad CSV row)."""


class RecordRejected(MessageError):
    """One record of an imported file is unusable; the rest of the file is still imported.

    Importers report every skipped row through the error path with this class, so
    ``klimaflow import`` and catch nodes can list them as ``file:line: reason``.
    """

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")


class ExpressionError(NodeError):
    """A user expression (JSONata, Jinja2, regex) failed to compile or evaluate."""


class FunctionError(NodeError):
    """A user function called by a ``python`` node raised, returned garbage, or timed out."""


class TransientError(NodeError):
    """A failure worth retrying later: the message itself is fine."""


class ServiceUnavailable(TransientError):
    """A remote service (broker, database, website) is not reachable right now."""


class EngineError(KlimaflowError):
    """The runtime was used in a way it does not support."""


def error_chain(exc: BaseException) -> list[str]:
    """Class names from the exception's class up to ``BaseException``, for catch matching."""
    return [cls.__name__ for cls in type(exc).__mro__ if issubclass(cls, BaseException)]
