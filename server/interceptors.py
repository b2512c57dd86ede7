"""Cross-cutting concerns of every RPC, as `grpc.aio.ServerInterceptor`s.

- `MetricsInterceptor` (outermost): latency per method and final code, in-flight count, and a
  call that arrives after its deadline is answered DEADLINE_EXCEEDED without running. (Writes
  pass their remaining time to the sequencer, which drops commands whose caller gave up.)
- `AuthInterceptor` (only with a tokens file): UNAUTHENTICATED for a missing or unknown bearer
  token, PERMISSION_DENIED when the role may not call the method or the method is not in the
  table of `server.auth` (deny by default).

Denials are RpcMethodHandlers that abort at once; they are stream-stream handlers so they answer
any call shape without reading the request.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.auth import PUBLIC, Tokens, TokensFileError, bearer_token, method_roles
from server.convert import status_of

__all__ = ["AuthInterceptor", "MetricsInterceptor", "build_interceptors"]

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

_UNKNOWN_METHOD = "unknown"


def _denial(code: grpc.StatusCode, reason: str, message: str) -> grpc.RpcMethodHandler:
    status = status_of(code, reason, message)

    async def deny(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(status)

    return grpc.stream_stream_rpc_method_handler(deny)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.roles = method_roles()
        self._unauthenticated = _denial(
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
            "missing or unknown bearer token (send `authorization: Bearer <token>`)",
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        need = self.roles.get(method)
        if need == PUBLIC:
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        rank = None if token is None else self.tokens.rank(token)
        if rank is None:
            return self._unauthenticated
        if need is None:
            return _denial(
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"{method} is not a method this server allows",
            )
        if rank < need:
            return _denial(
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                f"the token's role may not call {method}",
            )
        return await continuation(handler_call_details)


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpc versions keep the raw number
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c.name
    return default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.known = frozenset(method_roles())

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        label = method if method in self.known else _UNKNOWN_METHOD
        return _wrap(handler, label, self.metrics)


def _wrap(handler: grpc.RpcMethodHandler, label: str, metrics: Any) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_observed(handler.unary_unary, label, metrics))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_observed(handler.unary_stream, label, metrics))
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=_observed(handler.stream_unary, label, metrics))
    return handler._replace(stream_stream=_observed(handler.stream_stream, label, metrics))


def _observed(behavior: Any, label: str, metrics: Any) -> Any:
    """The behavior, timed and counted. Keeps its shape: async generator or coroutine."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metrics.rpc_started(label)
            code = "UNKNOWN"
            try:
                await _check_deadline(context)
                async for response in behavior(request, context):
                    yield response
                code = _code_name(context, "OK")
            except BaseException as exc:
                code = _failure_code(context, exc)
                raise
            finally:
                metrics.rpc_finished(label, code, time.perf_counter() - started)

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        metrics.rpc_started(label)
        code = "UNKNOWN"
        try:
            await _check_deadline(context)
            response = await behavior(request, context)
            code = _code_name(context, "OK")
            return response
        except BaseException as exc:
            code = _failure_code(context, exc)
            raise
        finally:
            metrics.rpc_finished(label, code, time.perf_counter() - started)

    return call


def _failure_code(context: grpc.aio.ServicerContext, exc: BaseException) -> str:
    import asyncio

    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, grpc.aio.AbortError):
        return _code_name(context, "UNKNOWN")
    return "UNKNOWN"


async def _check_deadline(context: grpc.aio.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        await context.abort_with_status(
            status_of(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "deadline exceeded")
        )


def build_interceptors(config: Any, metrics: Any) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors, outermost first. Auth only when a tokens file is configured
    (with auth off `create_server` binds loopback only)."""
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if config.tokens_file:
        try:
            tokens = Tokens.load(config.tokens_file)
        except TokensFileError as exc:
            # The CLI reports a ConfigError as a startup error (exit 2), not a traceback.
            from server.app import ConfigError

            raise ConfigError(str(exc)) from None
        interceptors.append(AuthInterceptor(tokens))
    return interceptors
