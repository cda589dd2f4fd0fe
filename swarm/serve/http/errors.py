"""Errors as OpenAI sends them: a status and `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import re

import msgspec

from swarm.serve.http.api import ErrorBody, ErrorDetail

# The error types OpenAI's clients map statuses to (openai.BadRequestError and so on read the status).
INVALID = "invalid_request_error"
AUTH = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER = "server_error"
UNAVAILABLE = "service_unavailable_error"


class ApiError(Exception):
    """A request answered with an error: `status` and the body's fields. `retry` is sent as the
    x-should-retry header, which OpenAI's clients obey (None: no header, their own rule)."""

    def __init__(self, status: int, message: str, type: str = INVALID, param: str | None = None,
                 code: str | None = None, retry: bool | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code, self.retry = (
            status, message, type, param, code, retry)

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))

    def headers(self) -> dict[str, str]:
        return {} if self.retry is None else {"x-should-retry": "true" if self.retry else "false"}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, INVALID, param, code)


def unsupported(param: str, what: str) -> ApiError:
    return bad_request(f"{param}: {what} is not supported by this server (docs/http.md lists what is)", param,
                       "unsupported_parameter")


_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def invalid_body(e: msgspec.MsgspecError) -> ApiError:
    """A body msgspec could not read as the request type: its message, and the field it names as `param`."""
    text = str(e)
    match = _AT.search(text)
    param = match.group(1) if match and match.group(1) else None
    return bad_request(f"invalid request body: {text}", param)
