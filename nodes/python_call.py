"""``python``: call a function from the flow repository's own Python code on each message.

Only importable functions (``package.module:function``) can be called, never code written
into a flow file: the code is versioned, reviewed, linted and tested like any other code.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import inspect
import re
import threading
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationInfo, WithJsonSchema, field_validator

from engine.errors import FunctionError, KlimaflowError
from engine.message import Message
from engine.node import Node
from engine.types import Duration, NodeConfig

_REF_RE: Final = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: Calls that time out keep running in their thread (threads cannot be killed); past this
#: many, the node refuses new calls instead of piling up threads.
MAX_THREADS: Final = 4


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (or ``module:Class.method``); ValueError says what failed."""
    if not _REF_RE.match(ref):
        raise ValueError(f"{ref!r} is not of the form 'package.module:function'")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{ref!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _check_ref(ref: str) -> str:
    resolve_function(ref)
    return ref


FunctionRef = Annotated[
    str,
    AfterValidator(_check_ref),
    WithJsonSchema({"type": "string", "pattern": _REF_RE.pattern, "x-klimaflow-widget": "python-function"}),
]


class PythonConfig(NodeConfig):
    """Which function, what it receives, how its result becomes messages, and how long it may take.

    The function is called as ``function(value, **kwargs)`` where ``value`` is the payload
    (or the message's dict view) and returns the new payload. Returning ``None`` drops the
    message (counted as `dropped`). The module is imported when the flow is validated, once per process: changed
    code needs a restart.
    """

    function: FunctionRef = Field(
        description="Import path `package.module:function` of a function in the flow repository, e.g. `climate.calibration:correct`."
    )
    input: Literal["payload", "message"] = Field(
        default="payload",
        description="Pass the payload, or the whole message as a dict (`payload`, `topic`, `_msgid`, meta keys).",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for every call, e.g. `{offset: -0.4}`."
    )
    split: bool = Field(
        default=False,
        description="A returned list becomes one message per element (`None` elements are skipped).",
    )
    timeout: Duration = Field(
        default=5.0,
        description="Longest a call may take (e.g. `500ms`, `5s`); a slower call raises `FunctionError`.",
    )

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("kwargs")
    @classmethod
    def _accepted(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        ref = info.data.get("function")
        if ref is None:  # the function reference itself is invalid, already reported
            return value
        try:
            sig = inspect.signature(resolve_function(ref))
        except (TypeError, ValueError):  # some builtins have no introspectable signature
            return value
        try:
            sig.bind(None, **value)
        except TypeError as exc:
            raise ValueError(f"{ref} cannot be called as function(value, **kwargs): {exc}") from None
        return value


class PythonNode(Node):
    """Call a Python function (`package.module:function`) on each message; its return value is the new payload.

    Synchronous functions run in a worker thread so a slow one cannot block the event
    loop; ``async def`` functions are awaited. Both are bounded by ``timeout``. A call that
    times out keeps running in its thread (Python threads cannot be stopped); at most
    ``MAX_THREADS`` such calls per node exist before new calls are refused. The threads are
    daemons, so a stuck function does not keep the engine from exiting. A sync function
    receives a deep copy of its input, which a late-finishing call cannot corrupt.

    Exceptions the function raises from ``engine.errors`` (``MessageError``,
    ``TransientError``, ...) are routed as they are; any other exception, and a timeout,
    becomes ``FunctionError``.
    """

    type_name = "python"
    category = "function"
    Config = PythonConfig
    outputs = ("out",)
    color = "#fdd0a2"
    icon = "python"
    config: PythonConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fn = resolve_function(self.config.function)
        # Other callables returning awaitables are awaited too (see _call).
        self._async = inspect.iscoroutinefunction(self._fn)
        self._running = 0
        self._timed_out = False

    async def on_message(self, msg: Message) -> None:
        c = self.config
        value: Any = msg.payload if c.input == "payload" else msg.to_dict()
        result = await self._call(value)
        if result is None:
            self.ctx.counters.dropped += 1
            return
        if c.split and isinstance(result, list):
            for item in result:
                if item is None:
                    continue
                await self.send(msg.derive(item))
            return
        msg.payload = result
        await self.emit(msg)

    async def _call(self, value: Any) -> Any:
        c = self.config
        try:
            async with asyncio.timeout(c.timeout) as deadline:
                if self._async:
                    result = await self._fn(value, **copy.deepcopy(c.kwargs))
                else:
                    result = await self._in_thread(copy.deepcopy(value), copy.deepcopy(c.kwargs))
                if inspect.isawaitable(result):
                    result = await result
        except KlimaflowError:
            raise
        except TimeoutError as exc:
            if not deadline.expired():
                raise self._failed(exc) from exc
            self._timed_out = True
            self.status("warning", f"a call timed out after {c.timeout:g}s")
            raise FunctionError(
                f"{c.function} did not return within {c.timeout:g}s"
                + ("" if self._async else " (it may still be running in its thread)")
            ) from None
        except Exception as exc:
            raise self._failed(exc) from exc
        if self._timed_out:
            self._timed_out = False
            self.status()
        return result

    def _failed(self, exc: BaseException) -> FunctionError:
        return FunctionError(f"{self.config.function} raised {type(exc).__name__}: {exc}")

    async def _in_thread(self, value: Any, kwargs: dict[str, Any]) -> Any:
        """Run the function in a new daemon thread (not a pool: pools are joined at exit)."""
        if self._running >= MAX_THREADS:
            raise FunctionError(
                f"{self.config.function}: {self._running} earlier calls are still running after timing out; "
                "not starting another"
            )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        fn = self._fn

        def settle(ok: bool, outcome: Any) -> None:
            self._running -= 1
            if done.done():  # timed out and cancelled meanwhile
                return
            if ok:
                done.set_result(outcome)
            else:
                done.set_exception(outcome)

        def work() -> None:
            try:
                ok, outcome = True, fn(value, **kwargs)
            except Exception as exc:
                ok, outcome = False, exc
            except BaseException as exc:  # SystemExit & co. must not end the engine from a thread
                ok, outcome = False, RuntimeError(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(RuntimeError):  # the loop is gone: the engine stopped
                loop.call_soon_threadsafe(settle, ok, outcome)

        self._running += 1
        try:
            threading.Thread(target=work, name=f"python:{self.ctx.node_id}", daemon=True).start()
        except BaseException:
            self._running -= 1
            raise
        return await done
