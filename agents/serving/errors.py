"""Errors as OpenAI error objects with an HTTP status (4xx: the request; 5xx: the server).

`ServeError` is what request handling raises on purpose; `from_run_error` maps what a run raised.
`retry` says whether a client should retry: the openai client retries 408/409/429/5xx unless the
response says `x-should-retry: false`, which we send for failures a retry cannot fix.
"""

from __future__ import annotations

import logging

from agents.serving.protocol import ErrorBody, ErrorResponse
from swarm.errors import BackendUnavailable, NoSurvivingParticles, SwarmError, redact_text

log = logging.getLogger("agents.serving")


class ServeError(SwarmError):
    """A request failed; `status`, and the OpenAI error fields `type`, `param`, `code`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = redact_text(message)
        self.type = type
        self.param = param
        self.code = code
        self.retry = retry

    def response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))

    def headers(self) -> dict[str, str]:
        return {} if self.retry else {"x-should-retry": "false"}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ServeError:
    return ServeError(400, message, param=param, code=code)


class BudgetExceeded(ServeError):
    """The run hit its budget before its population finished: there is no posterior answer yet."""

    def __init__(self, stopped_by: str, detail: str) -> None:
        field = _PARAM.get(stopped_by, stopped_by)
        super().__init__(400, f"budget exceeded: the run reached its {field} limit before its particles finished "
                              f"({detail}); raise swarm.{field} (up to the server's limit) or simplify the request",
                         param=f"swarm.{field}", code="budget_exceeded")


_PARAM = {"max_seconds": "timeout_s"}


def from_run_error(exc: BaseException) -> ServeError:
    """The error object for an exception a run raised (logged when it is the server's fault)."""
    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, NoSurvivingParticles):
        return ServeError(422, f"no answer satisfies the program's constraints: {exc}", code="no_surviving_particles")
    if isinstance(exc, BackendUnavailable):
        return ServeError(503, f"the model backend is unavailable: {exc}", type="server_error",
                          code="backend_unavailable", retry=True)
    if isinstance(exc, TimeoutError):
        return ServeError(504, f"the run did not finish in time: {exc}", type="server_error", code="timeout")
    if isinstance(exc, SwarmError):
        log.error("the served program failed: %s: %s", type(exc).__name__, exc)
        return ServeError(500, f"the served program failed: {type(exc).__name__}: {exc}", type="server_error",
                          code="program_error")
    return internal_error(exc)


def internal_error(exc: BaseException) -> ServeError:
    """The 500 for an exception nothing expected (a bug), logged with its traceback."""
    log.exception("request failed", exc_info=exc)
    return ServeError(500, f"internal server error ({type(exc).__name__}); see the server log", type="server_error",
                      code="internal_error")
