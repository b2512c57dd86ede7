"""Cross-cutting concerns of every RPC, applied once when the handlers are registered.

- Metrics (outermost): latency per method and final code, in-flight count, and a call that
  arrives after its deadline is answered DEADLINE_EXCEEDED without running. (Writes pass their
  remaining time to the sequencer, which drops commands whose caller gave up.)
- Auth (only with a tokens file): UNAUTHENTICATED for a missing or unknown bearer token,
  PERMISSION_DENIED when the role may not call the method or the method is not in the table of
  `server.auth` (deny by default).
- Request parsing: the handler is registered without its request deserializer and the wrapper
  parses, so bytes that are not the method's request message answer INVALID_ARGUMENT
  MALFORMED_MESSAGE (gRPC's own parse failure would answer UNKNOWN "Unexpected DecodeError").
  A request stream is parsed message by message as the servicer reads it: the bad message
  fails the stream like any refused message (`messages[i]`), after the ones before it.

`RpcHandlers` collects what the generated `add_*_to_server` functions register (it stands in for
the server), wraps every method handler once, and `install`s itself on the real server as its
only handler. Denials are RpcMethodHandlers that abort at once; they are stream-stream handlers
so they answer any call shape without reading the request.

Why not `grpc.aio.ServerInterceptor`s (this module's first form): grpc.aio runs the interceptor
chain as extra coroutines on every call, and the metrics interceptor re-wrapped the handler on
every call (namedtuple `_replace`, closures, `inspect`). And why one generic handler instead of the
generated "registered method" handlers: grpc.aio's accept loop keeps one pending request per
registered method (~45 here: five services, health, two reflection versions) and runs
`asyncio.wait` over all of them for every call it accepts. Together with prometheus_client's
per-call cost these made a unary GetAvailability cost twice the empty handler's server CPU.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from engine.errors import Code, Rejection
from server.auth import PUBLIC, Tokens, TokensFileError, bearer_token, method_roles
from server.convert import EdgeError, abort_with, answer_error, status_of
from server.metrics import RpcSeries

__all__ = ["MalformedMessage", "RpcHandlers", "build_handlers", "parse_request"]

_UNKNOWN_METHOD = "unknown"
_UNAUTHENTICATED_MESSAGE = "missing or unknown bearer token (send `authorization: Bearer <token>`)"
_DEADLINE_EXCEEDED = status_of(
    grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "deadline exceeded"
)


def _denial(code: grpc.StatusCode, reason: str, message: str) -> grpc.RpcMethodHandler:
    status = status_of(code, reason, message)

    async def deny(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(status)

    return grpc.stream_stream_rpc_method_handler(deny)


def _unauthenticated() -> grpc.RpcMethodHandler:
    return _denial(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", _UNAUTHENTICATED_MESSAGE)


def _not_allowed(method: str) -> grpc.RpcMethodHandler:
    return _denial(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        f"{method} is not a method this server allows",
    )


def _role_too_low(method: str) -> grpc.RpcMethodHandler:
    return _denial(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        f"the token's role may not call {method}",
    )


def _token_rank(tokens: Tokens, handler_call_details: grpc.HandlerCallDetails) -> int | None:
    token = bearer_token(handler_call_details.invocation_metadata)
    return None if token is None else tokens.rank(token)


# --- the registration-time wrapper ------------------------------------------------------------


class _Dispatcher(grpc.GenericRpcHandler):
    """The server's one generic handler: the pre-wrapped handler of a method, or a denial."""

    def __init__(self, table: RpcHandlers) -> None:
        self._t = table

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        t = self._t
        method = handler_call_details.method
        wrapped = t.wrapped.get(method)
        if t.tokens is None:
            return wrapped if wrapped is not None else t.fallback(handler_call_details)
        need = t.roles.get(method)
        if need != PUBLIC:
            rank = _token_rank(t.tokens, handler_call_details)
            if rank is None:
                return t.observed(_unauthenticated(), method)
            if need is None:
                return t.observed(_not_allowed(method), method)
            if rank < need:
                return t.observed(_role_too_low(method), method)
        return wrapped if wrapped is not None else t.fallback(handler_call_details)


class RpcHandlers(grpc.aio.Server):
    """Every method handler of the server, wrapped once with metrics (and auth).

    Pass it where the generated `add_*_to_server` functions, `health_pb2_grpc` and
    `reflection.enable_server_reflection` expect the server, then `install(server)`. It is not a
    server: only the two registration methods work.
    """

    def __init__(self, metrics: Any, tokens: Tokens | None = None) -> None:
        self.metrics = metrics
        self.tokens = tokens
        self.roles = method_roles()
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self._installed = False

    # --- what registration calls ---------------------------------------------------------------

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        if self._installed:
            raise RuntimeError("handlers added after install()")
        for name, handler in method_handlers.items():
            method = f"/{service_name}/{name}"
            self.wrapped[method] = self.observed(handler, method)

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        # Generated code adds each service twice (generic and registered); the registered form
        # is the one kept. A handler only added as generic is asked per call (`fallback`).
        if self._installed:
            raise RuntimeError("handlers added after install()")
        self._generic.extend(generic_rpc_handlers)

    def install(self, server: grpc.aio.Server) -> None:
        """Register on `server` (before it starts) as its only handler."""
        self._installed = True
        server.add_generic_rpc_handlers((_Dispatcher(self),))

    # --- helpers of the dispatcher ---------------------------------------------------------

    def label(self, method: str) -> str:
        return method if method in self.roles else _UNKNOWN_METHOD

    def observed(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return _wrap(handler, self.metrics.rpc_series(self.label(method)))

    def fallback(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        for generic in self._generic:
            handler = generic.service(handler_call_details)
            if handler is not None:
                return self.observed(handler, handler_call_details.method)
        return None

    # --- not a server ----------------------------------------------------------------------

    def add_insecure_port(self, address: str) -> int:
        raise NotImplementedError("RpcHandlers only collects handlers")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        raise NotImplementedError("RpcHandlers only collects handlers")

    async def start(self) -> None:
        raise NotImplementedError("RpcHandlers only collects handlers")

    async def stop(self, grace: float | None) -> None:
        raise NotImplementedError("RpcHandlers only collects handlers")

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        raise NotImplementedError("RpcHandlers only collects handlers")


def _load_tokens(config: Any) -> Tokens | None:
    if not config.tokens_file:
        return None
    try:
        return Tokens.load(config.tokens_file)
    except TokensFileError as exc:
        # The CLI reports a ConfigError as a startup error (exit 2), not a traceback.
        from server.app import ConfigError

        raise ConfigError(str(exc)) from None


def build_handlers(config: Any, metrics: Any) -> RpcHandlers:
    """The server's handler table: metrics always, auth only when a tokens file is configured
    (with auth off `create_server` binds loopback only)."""
    return RpcHandlers(metrics, _load_tokens(config))


# --- wrapping one behavior --------------------------------------------------------------------


def _wrap(handler: grpc.RpcMethodHandler, series: RpcSeries) -> grpc.RpcMethodHandler:
    parse = handler.request_deserializer
    if parse is not None:
        handler = handler._replace(request_deserializer=None)
    if handler.unary_unary is not None:
        behavior = handler.unary_unary
        if getattr(behavior, "raw_request", False):
            parse = None  # it takes the request bytes (server/wire.py, `raw_request`)
        serialize = None
        if getattr(behavior, "pre_encoded", False):
            # Its answers may be wire bytes already (server/wire.py): registered without a
            # serializer, so gRPC sends bytes as they are; `call` serializes a message answer.
            serialize = handler.response_serializer
            handler = handler._replace(response_serializer=None)
        call = _observed_call(behavior, series, parse=parse, serialize=serialize)
        return handler._replace(unary_unary=call)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_observed(handler.unary_stream, series, _one(parse)))
    each = _each(parse)
    if handler.stream_unary is not None:
        call = _observed_call(handler.stream_unary, series, prepare=each)
        return handler._replace(stream_unary=call)
    return handler._replace(stream_stream=_observed(handler.stream_stream, series, each))


class MalformedMessage(EdgeError):
    """Request bytes that do not parse as the method's request message (message `index` of a
    request stream)."""

    def __init__(self, parse: Any, exc: Exception, index: int | None = None) -> None:
        kind = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        name = kind.full_name if kind is not None else "request message"
        where = "the request is" if index is None else f"messages[{index}]:"
        text = f"{where} not a valid {name} ({type(exc).__name__}: {exc})"
        super().__init__(Rejection(Code.INVALID_ARGUMENT, "MALFORMED_MESSAGE", text))


Prepare = Any  # (request) -> request: `_one` or `_each`, or None


def parse_request(parse: Any, request: bytes) -> Any:
    """`parse(request)`; bytes that do not parse raise `MalformedMessage` (for a `raw_request`
    method that parses its request itself)."""
    try:
        return parse(request)
    except Exception as exc:
        raise MalformedMessage(parse, exc) from None


def _one(parse: Any) -> Prepare:
    """Parse a unary request; bytes that do not parse raise `MalformedMessage`."""
    if parse is None:
        return None

    def prepare(request: bytes) -> Any:
        return parse_request(parse, request)

    return prepare


def _each(parse: Any) -> Prepare:
    """Parse each message of a request stream as the servicer reads it; one that does not parse
    raises `MalformedMessage` there, so the servicer fails the stream as for a refused message."""
    if parse is None:
        return None

    async def parsed(requests: Any) -> Any:
        index = 0
        async for raw in requests:
            try:
                message = parse(raw)
            except Exception as exc:
                raise MalformedMessage(parse, exc, index) from None
            index += 1
            yield message

    return parsed


def _observed(behavior: Any, series: RpcSeries, prepare: Prepare) -> Any:
    """A stream-response behavior, timed and counted, its request made ready by `prepare`
    (`_one`, `_each`; None: passed as is). Keeps its shape: an async generator, or a coroutine
    that writes its answers with `context.write` (health's Watch, reflection)."""
    if not inspect.isasyncgenfunction(behavior):
        return _observed_call(behavior, series, prepare=prepare)
    clock = time.perf_counter

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = clock()
        series.in_flight += 1
        code = "UNKNOWN"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                await _deadline_exceeded(context)
            if prepare is not None:
                request = prepare(request)
            async for response in behavior(request, context):
                yield response
            code = _code_name(context, "OK")
        except MalformedMessage as exc:  # the request's, or a stream's the servicer let by
            code = "INVALID_ARGUMENT"
            await abort_with(context, exc.rejection, **exc.metadata)
        except BaseException as exc:
            code = _failure_code(context, exc)
            raise
        finally:
            series.finished(code, clock() - started)

    return stream


def _observed_call(
    behavior: Any,
    series: RpcSeries,
    *,
    parse: Any = None,
    prepare: Prepare = None,
    serialize: Any = None,
) -> Any:
    """A unary-response behavior (a coroutine), timed and counted: a unary request parsed by
    `parse`, or a request stream made ready by `prepare` (`_each`), and a message answer
    serialized by `serialize` (None: gRPC's serializer does it, or the answer is bytes).

    A servicer method decorated with `unary` is called undecorated (`unary_of`), its errors
    answered here by the same `answer_error`: one coroutine less per call. On this path each
    Python frame costs several times its in-process price, because the rest of a call through
    grpc.aio leaves the CPU caches cold (bench/README.md, "gRPC settings")."""
    clock = time.perf_counter
    inner = getattr(behavior, "unary_of", None)
    if inner is not None:
        behavior = inner.__get__(behavior.__self__)

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = clock()
        series.in_flight += 1
        code = "UNKNOWN"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                await _deadline_exceeded(context)
            try:
                if parse is not None:
                    try:
                        request = parse(request)
                    except Exception as exc:
                        raise MalformedMessage(parse, exc) from None
                elif prepare is not None:
                    request = prepare(request)
                response = await behavior(request, context)
            except Exception as exc:
                await answer_error(context, exc)
            if serialize is not None and response.__class__ is not bytes:
                response = serialize(response)
            status = context.code()
            code = "OK" if status is None else _code_name(context, "OK")
            return response
        except BaseException as exc:
            code = _failure_code(context, exc)
            raise
        finally:
            series.finished(code, clock() - started)

    return call


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpc versions keep the raw number
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c.name
    return default


def _failure_code(context: grpc.aio.ServicerContext, exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, grpc.aio.AbortError):
        return _code_name(context, "UNKNOWN")
    return "UNKNOWN"


async def _deadline_exceeded(context: grpc.aio.ServicerContext) -> NoReturn:
    await context.abort_with_status(_DEADLINE_EXCEEDED)
    raise AssertionError("abort_with_status returned")  # pragma: no cover
